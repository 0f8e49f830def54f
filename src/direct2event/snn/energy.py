"""Energy models: energy per sample from counted events and synaptic operations.

A profile is data (a mapping read from YAML), so a chip's figures can be added without code:

- ``kind: per_event`` (the paper's model): ``E = e_event_pj * events`` (input events plus every
  non-zero message a neuron sends), no static cost.
- ``kind: synops``: ``E = e_ac_pj * ACs + e_mac_pj * MACs``; a synop driven by a binary event is an
  AC, one driven by a graded or analog value a MAC (e.g. Horowitz 2014, 45 nm, 32-bit float:
  0.9 pJ and 4.6 pJ).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from direct2event.snn.ops import OpCounts

ENERGY_KINDS = ("per_event", "synops")
PJ_PER_NJ = 1e3  # energies per sample are in nanojoules everywhere


@dataclass(frozen=True)
class EnergyProfile:
    """Cost figures of one hardware model, in picojoules."""

    name: str
    kind: str
    e_event_pj: float = 0.0
    e_ac_pj: float = 0.0
    e_mac_pj: float = 0.0
    source: str = ""

    def __post_init__(self) -> None:
        if self.kind not in ENERGY_KINDS:
            raise ValueError(
                f"Energy profile '{self.name}': unknown kind '{self.kind}'; use one of {ENERGY_KINDS}."
            )
        costs = (self.e_event_pj, self.e_ac_pj, self.e_mac_pj)
        if any(c < 0 for c in costs):
            raise ValueError(f"Energy profile '{self.name}': costs must be >= 0, got {costs}.")
        if self.kind == "per_event" and self.e_event_pj <= 0:
            raise ValueError(f"Energy profile '{self.name}' (per_event) needs e_event_pj > 0.")
        if self.kind == "synops" and (self.e_ac_pj <= 0 or self.e_mac_pj <= 0):
            raise ValueError(
                f"Energy profile '{self.name}' (synops) needs e_ac_pj and e_mac_pj > 0."
            )

    def energy_pj(self, counts: OpCounts) -> float:
        """Total energy of everything in ``counts``, in pJ."""
        if self.kind == "per_event":
            return self.e_event_pj * counts.events
        return self.e_ac_pj * counts.ac + self.e_mac_pj * counts.mac

    def energy_nj_per_sample(self, counts: OpCounts) -> float:
        return counts.per_sample(self.energy_pj(counts)) / PJ_PER_NJ

    def input_energy_nj_per_sample(self, counts: OpCounts) -> float:
        """Energy per sample that the network input alone costs, whatever its hidden neurons
        do: the input's messages (``per_event``) or the synops they drive in the first layer
        (``synops``). No amount of spike regularisation brings a network below it."""
        if self.kind == "per_event":
            pj = self.e_event_pj * counts.input_events
        else:
            layer = counts.layers.get(counts.input_layer or "")
            pj = 0.0 if layer is None else self._synop_pj(layer.op) * layer.synops
        return counts.per_sample(pj) / PJ_PER_NJ

    def _synop_pj(self, op: str) -> float:
        """Cost of one synaptic operation: an accumulate (``AC``) or a multiply-accumulate."""
        return self.e_ac_pj if op == "AC" else self.e_mac_pj

    def layer_energy_nj_per_sample(self, counts: OpCounts) -> dict[str, float]:
        """Energy per sample of each layer: synaptic layers (synops) or neuron layers (events)."""
        out: dict[str, float] = {}
        if self.kind == "per_event":
            out["input"] = self.e_event_pj * counts.input_events
            for name, events in counts.neuron_events.items():
                out[name] = self.e_event_pj * events
        else:
            for name, layer in counts.layers.items():
                out[name] = self._synop_pj(layer.op) * layer.synops
        return {k: counts.per_sample(v) / PJ_PER_NJ for k, v in out.items()}


def load_profiles(raw: Mapping[str, Mapping[str, Any]]) -> dict[str, EnergyProfile]:
    """Profiles from a ``{name: {kind, e_event_pj | e_ac_pj, e_mac_pj, source}}`` mapping."""
    if not raw:
        raise ValueError("No energy profiles given; define at least one (see energy_profiles).")
    profiles = {}
    for name, spec in raw.items():
        unknown = set(spec) - {"kind", "e_event_pj", "e_ac_pj", "e_mac_pj", "source"}
        if unknown:
            raise ValueError(f"Energy profile '{name}': unknown keys {sorted(unknown)}.")
        profiles[name] = EnergyProfile(name=name, **spec)
    return profiles
