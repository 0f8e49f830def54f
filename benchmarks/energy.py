"""D and E of a finished run under every energy model, NeuroBench's metrics beside our counts,
the bit-matched ANN, and what the energy stage costs.

    .venv/bin/kedro run --pipelines mnist          # once: the networks
    .venv/bin/python benchmarks/energy.py --key mnist [--reps 3]

On the test split (as the evaluation node), for the run's latest D and E:

- our counts and energies (``snn.evaluation.measure_counts``) and NeuroBench's metrics computed
  by the neurobench package (``glue.neurobench``, on the first ``transfer.neurobench_samples``
  test samples), with the difference of each pair on those samples;
- the bit-matched ANN (``snn.evaluation.ann_reference``): its energy, E's reduction against it
  and the spike rate where E breaks even, under every model;
- seconds: the evaluation as it was (our counts of D and E) against the evaluation node now
  (plus NeuroBench and the ANN), median of ``--reps``, one process, alternating.

Writes ``benchmarks/results/energy-<key>/<machine>.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from sweep_cost import load_run  # noqa: E402

from direct2event.glue.machine import machine_name, result_path, torch_build  # noqa: E402
from direct2event.glue.params import load_settings  # noqa: E402
from direct2event.pipelines.data_processing.nodes import prepare_data  # noqa: E402
from direct2event.pipelines.evaluation.nodes import evaluate_transfer  # noqa: E402
from direct2event.snn.evaluation import measure  # noqa: E402
from direct2event.snn.models import restore  # noqa: E402

COUNTS = ("ac_per_sample", "mac_per_sample", "synops_per_sample", "events_per_sample")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--key", default="mnist")
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    params, (raw, direct_model, event_model) = load_run(
        args.key, "raw_data", "direct_model", "event_model"
    )
    settings = load_settings(args.key, dict(params.get(args.key) or {}), params["energy_profiles"])
    splits = prepare_data(raw, settings)
    profiles, device = settings.profiles(), settings.device

    def before() -> None:  # the evaluation node before NeuroBench and the ANN
        for model, coding in ((direct_model, settings.direct_coding),
                              (event_model, settings.event_coding)):  # fmt: skip
            measure(restore(model), splits.test, coding, device, profiles, settings.seed)

    def after() -> dict:
        return evaluate_transfer(direct_model, event_model, splits, settings)

    times: dict[str, list[float]] = {"before_s": [], "after_s": []}
    result = after()  # warm-up, and the figures
    for _ in range(args.reps):
        for name, fn in (("before_s", before), ("after_s", after)):
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    seconds = {k: statistics.median(v) for k, v in times.items()}
    networks = {}
    sample = splits.test.head(settings.transfer.neurobench_samples or len(splits.test))
    models = {"direct": (direct_model, settings.direct_coding),
              "event": (event_model, settings.event_coding)}  # fmt: skip
    for net, (model, coding) in models.items():
        nb = result[net]["neurobench"]  # on the first neurobench_samples: ours on the same
        res = measure(restore(model), sample, coding, device, profiles, settings.seed)
        networks[net] = {
            "accuracy": result[net]["accuracy"],
            "neurobench_samples": len(sample),
            "ours": {k: res[k] for k in COUNTS},
            "neurobench": nb,
            "effective_acs_minus_ours": nb["effective_acs"] - res["ac_per_sample"],
            "effective_macs_minus_ours": nb["effective_macs"] - res["mac_per_sample"],
            "energy_nJ_by_model": result[net]["energy_nJ_by_model"],
        }
    d, e = (result[n]["energy_nJ_by_model"] for n in ("direct", "event"))
    out = {
        "command": f"python benchmarks/energy.py --key {args.key} --reps {args.reps}",
        "machine": machine_name(),
        "torch": torch_build(),
        "test_samples": len(splits.test),
        "energy_reduction_by_model": {k: d[k] / e[k] for k in e},
        "networks": networks,
        "bit_matched_ann": result["bit_matched_ann"],
        **{k: round(v, 2) for k, v in seconds.items()},
        "energy_stage_added_s": round(seconds["after_s"] - seconds["before_s"], 2),
        "profiles": {k: p.source for k, p in profiles.items()},
    }
    path = result_path(f"energy-{args.key}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps({k: v for k, v in out.items() if k != "networks"}, indent=1))
    print(f"-> {path}")


if __name__ == "__main__":
    main()
