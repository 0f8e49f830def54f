"""Energy models: energy per sample from counted events, synaptic operations and neuron updates.

A profile is data (a mapping read from YAML), so a chip's figures can be added without code:

- ``kind: per_event`` (the paper's model): ``E = e_event_pj * events`` (input events plus every
  non-zero message a neuron sends), no static cost.
- ``kind: synops``: ``E = e_ac_pj * ACs + e_mac_pj * MACs``; a synop driven by a binary event is an
  AC, one driven by a graded or analog value a MAC (e.g. Horowitz 2014, 45 nm, 32-bit float:
  0.9 pJ and 4.6 pJ).
- ``kind: memory`` (compute plus data movement, after Yan et al., arXiv 2409.08290): every synop
  also reads its weight from the layer's on-chip SRAM, at a cost that grows with the SRAM's size
  (``sram_read_pj``: pJ per 64-bit read at each size in bytes, interpolated in log-log); every
  neuron at every step reads and writes its membrane (in an SRAM the size of its layer's
  membranes) and leaks (``e_leak_pj``); every message (an input event, a spike, a graded value)
  is sent as one address event (``e_message_pj``).

D and E are counted under the same rules: a graded or analog message means a MAC and the same
memory traffic as a spike's AC.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from direct2event.snn.ops import LayerCount, OpCounts

PJ_PER_NJ = 1e3  # energies per sample are in nanojoules everywhere

# the coefficients each kind needs (a profile missing one is refused, naming it)
REQUIRED: dict[str, tuple[str, ...]] = {
    "per_event": ("e_event_pj",),
    "synops": ("e_ac_pj", "e_mac_pj"),
    "memory": (
        "e_ac_pj",
        "e_mac_pj",
        "e_leak_pj",
        "e_message_pj",
        "weight_bits",
        "membrane_bits",
        "sram_read_pj",
    ),
}
ENERGY_KINDS = tuple(REQUIRED)
SRAM_WORD_BITS = 64  # sram_read_pj is per 64-bit read (Horowitz 2014's unit)


@dataclass(frozen=True)
class EnergyProfile:
    """Cost figures of one hardware model, in picojoules (see the module's docstring)."""

    name: str
    kind: str
    e_event_pj: float = 0.0
    e_ac_pj: float = 0.0
    e_mac_pj: float = 0.0
    e_leak_pj: float = 0.0
    e_message_pj: float = 0.0
    weight_bits: int = 0
    membrane_bits: int = 0
    sram_read_pj: Mapping[int, float] = field(default_factory=dict)  # bytes -> pJ per 64 bits
    source: str = ""

    def __post_init__(self) -> None:
        if self.kind not in ENERGY_KINDS:
            raise ValueError(
                f"Energy profile '{self.name}': unknown kind '{self.kind}'; use one of {ENERGY_KINDS}."
            )
        for key in REQUIRED[self.kind]:
            value = getattr(self, key)
            if key == "sram_read_pj":
                if not value or any(float(s) <= 0 or v <= 0 for s, v in value.items()):
                    raise ValueError(
                        f"Energy profile '{self.name}' ({self.kind}) needs sram_read_pj: "
                        "{bytes: pJ per 64-bit read, ...} with sizes and costs > 0."
                    )
            elif value <= 0:
                raise ValueError(
                    f"Energy profile '{self.name}' ({self.kind}) needs {key} > 0, got {value}."
                )
        costs = (self.e_event_pj, self.e_ac_pj, self.e_mac_pj, self.e_leak_pj, self.e_message_pj)
        if any(c < 0 for c in costs):
            raise ValueError(f"Energy profile '{self.name}': costs must be >= 0, got {costs}.")

    # --- the parts of the count --------------------------------------------------------------

    def sram_pj(self, size_bytes: float, bits: int) -> float:
        """One read (or write) of ``bits`` from an SRAM of ``size_bytes``: the 64-bit cost at
        that size, interpolated in log-log between the profile's sizes (clamped at its ends),
        scaled to ``bits``."""
        points = sorted((math.log(float(s)), math.log(v)) for s, v in self.sram_read_pj.items())
        x = math.log(max(size_bytes, 1.0))
        if x <= points[0][0]:
            y = points[0][1]
        elif x >= points[-1][0]:
            y = points[-1][1]
        else:
            (x0, y0), (x1, y1) = next(
                (a, b) for a, b in itertools.pairwise(points) if a[0] <= x <= b[0]
            )
            y = y0 + (y1 - y0) * (x - x0) / (x1 - x0)
        return math.exp(y) * bits / SRAM_WORD_BITS

    def synop_pj(self, layer: LayerCount, op: str | None = None) -> float:
        """One synaptic operation of ``layer``: the AC or MAC, plus (``memory``) its weight read."""
        compute = self.e_ac_pj if (op or layer.op) == "AC" else self.e_mac_pj
        if self.kind != "memory":
            return compute
        return compute + self.sram_pj(layer.weights * self.weight_bits / 8, self.weight_bits)

    def neuron_update_pj(self, neurons: int, bits: int | None = None, leak: bool = True) -> float:
        """One neuron's state at one step (``memory``): read and write it, and leak."""
        bits = bits or self.membrane_bits
        state = 2 * self.sram_pj(neurons * bits / 8, bits)
        return state + (self.e_leak_pj if leak else 0.0)

    # --- energy of a count ---------------------------------------------------------------------

    def layer_energy_pj(self, counts: OpCounts) -> dict[str, float]:
        """Energy of each part, in pJ over everything counted: ``input`` (the input's messages),
        each synaptic layer, each LIF layer (its messages and, ``memory``, its updates)."""
        if self.kind == "per_event":
            out = {"input": self.e_event_pj * counts.input_events}
            out.update({k: self.e_event_pj * v for k, v in counts.neuron_events.items()})
            return out
        out = {k: self.synop_pj(c) * c.synops for k, c in counts.layers.items()}
        if self.kind == "memory":
            out["input"] = self.e_message_pj * counts.input_events
            for name, steps in counts.neuron_steps.items():
                size = counts.neuron_sizes.get(name, 1)
                out[name] = self.neuron_update_pj(
                    size
                ) * steps + self.e_message_pj * counts.neuron_events.get(name, 0.0)
        return out

    def energy_pj(self, counts: OpCounts) -> float:
        """Total energy of everything in ``counts``, in pJ."""
        return sum(self.layer_energy_pj(counts).values())

    def energy_nj_per_sample(self, counts: OpCounts) -> float:
        return counts.per_sample(self.energy_pj(counts)) / PJ_PER_NJ

    def layer_energy_nj_per_sample(self, counts: OpCounts) -> dict[str, float]:
        """Energy per sample of each part (see :meth:`layer_energy_pj`)."""
        return {
            k: counts.per_sample(v) / PJ_PER_NJ for k, v in self.layer_energy_pj(counts).items()
        }

    def input_energy_nj_per_sample(self, counts: OpCounts) -> float:
        """Energy per sample that the network input alone costs, whatever its hidden neurons
        do: the input's messages (``per_event``), the synops they drive in the first layer
        (``synops``), both (``memory``). No amount of spike regularisation goes below it."""
        pj = 0.0
        if self.kind in ("per_event", "memory"):
            pj += (self.e_event_pj or self.e_message_pj) * counts.input_events
        if self.kind in ("synops", "memory"):
            layer = counts.layers.get(counts.input_layer or "")
            pj += 0.0 if layer is None else self.synop_pj(layer) * layer.synops
        return counts.per_sample(pj) / PJ_PER_NJ

    # --- the bit-matched ANN ---------------------------------------------------------------

    def ann_energy_nj_per_sample(self, direct: OpCounts, bits: int) -> float:
        """A quantised ANN of D's architecture with ``bits``-bit activations, in one pass: it
        sends D's messages and does D's operations of one step (D's activation sparsity stands
        in for the ANN's), every operation a MAC; a ``bits``-bit MAC costs at most ``bits``
        accumulates (bit-serial, the equivalence of arXiv 2409.08290: T binary steps carry what
        ceil(log2(T + 1)) bits do). Its neurons keep no membrane: a ``memory`` profile charges
        one write and one read of each ``bits``-bit activation, no leak."""
        steps = max(direct.timesteps, 1)
        mac = min(self.e_mac_pj, bits * self.e_ac_pj) if self.e_ac_pj else self.e_mac_pj
        if self.kind == "per_event":
            pj = self.e_event_pj * direct.events / steps
        else:
            pj = 0.0
            for c in direct.layers.values():
                memory = self.synop_pj(c) - (self.e_ac_pj if c.op == "AC" else self.e_mac_pj)
                pj += (mac + memory) * c.synops / steps
            if self.kind == "memory":
                pj += self.e_message_pj * direct.events / steps
                for name, steps_n in direct.neuron_steps.items():
                    size = direct.neuron_sizes.get(name, 1)
                    pj += self.neuron_update_pj(size, bits, leak=False) * steps_n / steps
        return direct.per_sample(pj) / PJ_PER_NJ


def spike_costs(
    profile: EnergyProfile, counts: OpCounts, order: list[tuple[str, str]]
) -> list[float]:
    """pJ per spike of each LIF layer under ``profile``, measured on real activity (``counts``):
    the message a spike is (``per_event``: an event; ``memory``: an address event) plus the
    synaptic operations its spikes drive in the next synaptic layer (``synops`` and ``memory``,
    with their weight reads), over the layer's spikes. ``order`` pairs each LIF layer with the
    synaptic layer its spikes reach (:func:`direct2event.snn.models.spike_targets`). A layer
    that did not fire is priced by its fan-out (the next layer's dense operations per neuron)."""
    costs = []
    for lif, target in order:
        spikes = counts.neuron_events.get(lif, 0.0)
        cost = profile.e_event_pj if profile.kind == "per_event" else profile.e_message_pj
        layer = counts.layers.get(target)
        if layer is not None and profile.kind != "per_event":
            per_op = profile.synop_pj(layer, "AC")
            if spikes > 0:
                cost += per_op * layer.synops / spikes
            else:
                cost += per_op * layer.dense / max(counts.neuron_steps.get(lif, 1.0), 1.0)
        costs.append(cost)
    return costs


def bit_matched_bits(timesteps: int) -> int:
    """The activation bits an ANN needs to carry what ``timesteps`` binary steps carry."""
    return max(1, math.ceil(math.log2(timesteps + 1)))


def break_even_rate(profile: EnergyProfile, event: OpCounts, ann_nj: float) -> float | None:
    """The mean hidden spike rate (spikes per neuron and step) at which E would cost what the
    bit-matched ANN costs under ``profile``: E's energy taken as its part that does not depend
    on its hidden spikes (the input's messages and synops, neuron updates) plus its spike-driven
    part scaled with the rate. None when E's fixed part alone exceeds the ANN's (no rate
    breaks even), or E has no hidden activity to scale."""
    rate = sum(event.neuron_events.values()) / max(event.neuron_updates, 1.0)
    total = profile.energy_nj_per_sample(event)
    fixed = profile.input_energy_nj_per_sample(event)
    if profile.kind == "memory":  # every neuron updates at every step, spiking or not
        fixed += sum(
            event.per_sample(profile.neuron_update_pj(event.neuron_sizes.get(n, 1)) * s) / PJ_PER_NJ
            for n, s in event.neuron_steps.items()
        )
    spiking = total - fixed
    if rate <= 0 or spiking <= 0 or ann_nj <= fixed:
        return None
    return rate * (ann_nj - fixed) / spiking


PROFILE_KEYS = {"kind", "source", *(k for keys in REQUIRED.values() for k in keys)}


def load_profiles(raw: Mapping[str, Mapping[str, Any]]) -> dict[str, EnergyProfile]:
    """Profiles from a ``{name: {kind, <its coefficients>, source}}`` mapping, refused before any
    work when a key is unknown or a coefficient of its kind is missing (named)."""
    if not raw:
        raise ValueError("No energy profiles given; define at least one (see energy_profiles).")
    profiles = {}
    for name, spec in raw.items():
        unknown = set(spec) - PROFILE_KEYS
        if unknown:
            raise ValueError(f"Energy profile '{name}': unknown keys {sorted(unknown)}.")
        kind = spec.get("kind")
        missing = [k for k in REQUIRED.get(str(kind), ()) if k not in spec]
        if missing:
            raise ValueError(
                f"Energy profile '{name}' (kind {kind}) is missing {missing}: every {kind} "
                f"profile needs {list(REQUIRED[str(kind)])} (conf/base/parameters_energy.yml)."
            )
        fields = dict(spec)
        if "sram_read_pj" in fields:
            fields["sram_read_pj"] = {int(k): float(v) for k, v in fields["sram_read_pj"].items()}
        profiles[name] = EnergyProfile(name=name, **fields)
    return profiles
