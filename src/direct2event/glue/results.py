"""The figures people read, written from result files: the README's results table and speed
line, ``docs/results.md`` and the index of ``benchmarks/results/``.

Every benchmark command writes ``benchmarks/results/<benchmark>/<machine slug>.json``
(:func:`direct2event.glue.machine.result_path`); a seed study is taken there from
``data/08_reporting/<key>/seeds.json`` by ``python -m direct2event results --take <key>``.
Nothing here is typed by hand: ``make results`` rewrites the pages, and a test fails when the
README's table differs from what they would say.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from direct2event.glue.machine import ROOT, machine_slug
from direct2event.glue.report_versions import read_report
from direct2event.glue.reports import SeedStudy
from direct2event.glue.shift_results import shift_rows

README_START = "<!-- results: written by `make results` from benchmarks/results; do not edit -->"
README_END = "<!-- /results -->"
DATASET_NAMES = {
    "mnist": "MNIST",
    "nmnist_sim": "N-MNIST, simulated",
    "nmnist": "N-MNIST",
    "digits": "digits (8x8)",
    "cifar10": "CIFAR-10",
    "imagenet_subset": "ImageNet subset",
    "dvs_gesture": "DVS-Gesture",
    "cifar10_dvs": "CIFAR10-DVS",
}


@dataclass(frozen=True)
class Benchmark:
    """A result folder: the command that writes it and the question it answers."""

    command: str
    answers: str


BENCHMARKS: dict[str, Benchmark] = {
    **{
        f"seeds-{key}": Benchmark(
            f"make seeds KEY={key} && make results TAKE={key}",
            f"{name}: the whole pipeline on seeds 0, 1, 2 at the defaults (mean, std, worst)",
        )
        for key, name in DATASET_NAMES.items()
    },
    **{
        f"candidates-{key}": Benchmark(
            f'make seeds KEY={key} PARAMS="..." NAME=<name> && '
            f'python -m direct2event results --candidate {key} <name> "..."',
            f"{name}: candidate defaults, each on seeds 0, 1, 2 (its overrides in the file)",
        )
        for key, name in DATASET_NAMES.items()
    },
    "speed": Benchmark(
        "make bench",
        "a training step, inference and peak memory against SpikingJelly and snnTorch",
    ),
    "chaos": Benchmark(
        "make chaos",
        "20 stops at random moments: runs left running, trials lost or repeated, files broken",
    ),
    "energy-mnist": Benchmark(
        "python benchmarks/energy.py --key mnist",
        "E's and D's energy under every profile, NeuroBench's metrics beside ours",
    ),
    "levers-mnist": Benchmark(
        "python benchmarks/levers.py --key mnist --lambda 2 --variant ...",
        "each lever of E's energy alone, on validation: penalty, thresholds, length, T",
    ),
    "sweep_cost-mnist": Benchmark(
        "python benchmarks/sweep_cost.py --key mnist --trials 20",
        "what a 20-trial sweep costs in full fine-tunings",
    ),
}


def result_files(benchmark: str, root: Path = ROOT) -> dict[str, Path]:
    """``benchmark``'s result file per machine slug."""
    folder = root / "benchmarks" / "results" / benchmark
    return {p.stem: p for p in sorted(folder.glob("*.json"))}


def _three_seeds(source: Path, command: str) -> SeedStudy:
    """The seed study at ``source``, refused when missing or with fewer than 3 seeds."""
    if not source.exists():
        raise FileNotFoundError(f"{source} does not exist: run `{command}` first (three seeds).")
    study = read_report(SeedStudy, source)
    if len(study.seeds) < 3:
        raise ValueError(f"{source} holds {len(study.seeds)} seed(s); the results need >= 3.")
    return study


def take_seed_study(key: str, root: Path = ROOT) -> Path:
    """Copy ``key``'s seed study (and its figure) into the results tree for this machine."""
    source = root / "data" / "08_reporting" / key / "seeds.json"
    study = _three_seeds(source, f"make seeds KEY={key}")
    target = root / "benchmarks" / "results" / f"seeds-{key}" / f"{machine_slug()}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(study.model_dump_json(indent=2) + "\n")
    figure = source.with_suffix(".png")
    if figure.exists():
        shutil.copyfile(figure, root / "docs" / "img" / f"{key}_seeds.png")
    return target


def take_candidate(key: str, name: str, params: str, root: Path = ROOT) -> Path:
    """Add the seed study of the variant ``name`` (``make seeds KEY=<key> PARAMS=<params>
    NAME=<name>``) to this machine's candidate defaults for ``key``: a default changes only when
    its candidate's study meets the dataset's targets, and the ones that did not stay on record."""
    source = root / "data" / "08_reporting" / key / name / "seeds.json"
    study = _three_seeds(source, f'make seeds KEY={key} PARAMS="{params}" NAME={name}')
    target = root / "benchmarks" / "results" / f"candidates-{key}" / f"{machine_slug()}.json"
    found = json.loads(target.read_text()) if target.exists() else {}
    found[name] = {"params": params, "study": json.loads(study.model_dump_json())}
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(found, indent=2) + "\n")
    return target


def seed_studies(root: Path = ROOT) -> dict[str, dict[str, SeedStudy]]:
    """Every taken seed study: machine slug -> dataset -> study."""
    out: dict[str, dict[str, SeedStudy]] = {}
    for key in DATASET_NAMES:
        for slug, path in result_files(f"seeds-{key}", root).items():
            out.setdefault(slug, {})[key] = read_report(SeedStudy, path)
    return out


def reference_machine(studies: dict[str, dict[str, SeedStudy]]) -> str | None:
    """The machine the README shows: the one with seed studies of the most datasets."""
    return max(studies, key=lambda slug: (len(studies[slug]), slug), default=None)


def _pm(mean: float, std: float, scale: float = 1.0, digits: int = 2, unit: str = "") -> str:
    return f"{scale * mean:.{digits}f}{unit} ± {scale * std:.{digits}f}"


ENERGY_MODELS = ("per_event", "synops_45nm", "memory_45nm")  # the table's columns, in order
ANN_MODEL = "memory_45nm"  # the model under which E is set against the bit-matched ANN


def _reduction(m: dict, s: dict, w: dict, field: str, model: str) -> str:
    """``mean ± std (worst)`` of a reduction, ``-`` where the study has none."""
    if model not in m.get(field, {}):
        return "-"
    worst = f" ({w[field][model]:.2f}x)" if model in w.get(field, {}) else ""
    return f"{_pm(m[field][model], s[field][model], unit='x')}{worst}"


def _neurobench(study: SeedStudy) -> str:
    nb = study.mean.get("neurobench_event")
    if not nb:
        return "-"
    return f"{nb['effective_acs']:,.0f} ACs, {nb['activation_sparsity']:.3f}"


def study_row(study: SeedStudy) -> str:
    """One dataset's row: mean ± std, the worst seed in brackets."""
    m, s, w = study.mean, study.std, study.worst
    reductions = [_reduction(m, s, w, "energy_reduction_by_model", k) for k in ENERGY_MODELS]
    lambdas = ", ".join(f"{r.rate_lambda:.3g}" for r in study.runs)
    cells = [
        DATASET_NAMES.get(study.dataset, study.dataset),
        ", ".join(map(str, study.seeds)),
        f"{_pm(m['direct_accuracy'], s['direct_accuracy'], 100)} %",
        f"{_pm(m['event_accuracy'], s['event_accuracy'], 100)} %",
        f"{_pm(m['accuracy_retention'], s['accuracy_retention'], digits=4)} "
        f"({w['accuracy_retention']:.4f})",
        *reductions,
        _reduction(m, s, w, "ann_event_reduction_by_model", ANN_MODEL),
        _neurobench(study),
        lambdas,
    ]
    return "| " + " | ".join(cells) + " |"


def results_table(studies: dict[str, SeedStudy]) -> str:
    header = (
        "| dataset | seeds | D accuracy | E accuracy | retention (worst) "
        "| energy reduction, `per_event` (worst) | `synops_45nm` (worst) | `memory_45nm` (worst) "
        f"| E against the bit-matched ANN, `{ANN_MODEL}` (worst) "
        "| E per sample (NeuroBench): effective ACs, activation sparsity | λ per seed |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|"
    )
    return "\n".join([header, *(study_row(s) for s in studies.values())])


def speed_line(root: Path = ROOT, slug: str | None = None) -> str:
    """The training step and inference against the best peer, on ``slug``'s machine."""
    files = result_files("speed", root)
    path = files.get(slug) if slug else None
    if path is None:
        return "Speed: no `make bench` result for this machine yet."
    result = json.loads(path.read_text())
    case = next(c for c in result["cases"] if c["name"] == "mnist_convnet")

    def ratio(metric: str) -> tuple[float, str]:
        peers = {k: v for k, v in case[metric].items() if k not in ("ours", "dense_floor") and v}
        best = min(peers, key=peers.get)
        return peers[best] / case[metric]["ours"], best

    train, train_peer = ratio("train_step_ms")
    infer, infer_peer = ratio("infer_ms")
    memory, memory_peer = ratio("peak_mem_mb")
    return (
        f"Speed (MNIST's network, batch {case['batch']}, T = {case['timesteps']}, same machine): "
        f"a training step {train:.2f}x as fast as the best peer ({train_peer}), inference "
        f"{infer:.2f}x ({infer_peer}), {memory:.2f}x less peak memory ({memory_peer}); "
        "logits and gradients checked equal first."
    )


def readme_block(root: Path = ROOT) -> str:
    """The README's results: one table (one machine), the machine, the speed line."""
    studies = seed_studies(root)
    slug = reference_machine(studies)
    if slug is None:
        return "No seed study yet: `make seeds KEY=mnist && make results TAKE=mnist`."
    chosen = studies[slug]
    first = next(iter(chosen.values()))
    return "\n\n".join(
        [
            results_table(chosen),
            f"Test split, mean ± std over seeds, the worst seed in brackets; machine: "
            f"{first.machine}, torch {first.torch}. Per-seed rows, the shift benchmark and every "
            "other benchmark: [docs/results.md](docs/results.md).",
            speed_line(root, slug),
        ]
    )


def _seed_rows(study: SeedStudy) -> str:
    lines = [
        "| seed | D accuracy | E accuracy | retention | reduction `per_event` | ceiling "
        "| E events / sample | λ | seconds |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in study.runs:
        ceiling = f"{r.energy_reduction_ceiling:.1f}x" if r.energy_reduction_ceiling else "-"
        seconds = f"{r.seconds:.0f}" if r.seconds else "-"
        lines.append(
            f"| {r.seed} | {100 * r.direct_accuracy:.2f} % | {100 * r.event_accuracy:.2f} % "
            f"| {r.accuracy_retention:.4f} | {r.energy_reduction:.2f}x | {ceiling} "
            f"| {r.events_per_sample:.0f} | {r.rate_lambda:.3g} | {seconds} |"
        )
    return "\n".join(lines)


def energy_section(key: str, slug: str, path: Path) -> str:
    """A run's D and E under every energy model, against the bit-matched ANN, and NeuroBench's
    counts beside ours (``benchmarks/energy.py``)."""
    r = json.loads(path.read_text())
    ann = r["bit_matched_ann"]
    lines = [
        f"## Energy of one {DATASET_NAMES.get(key, key)} run on `{slug}`",
        "",
        f"`{r['command']}`; {r['machine']}, torch {r['torch']}; {r['test_samples']} test samples.",
        "",
        f"| energy model | D (nJ) | E (nJ) | reduction | {ann['bits']}-bit ANN (nJ) "
        "| E against the ANN | E breaks even at spike rate |",
        "|---|---|---|---|---|---|---|",
    ]
    d, e = (r["networks"][n]["energy_nJ_by_model"] for n in ("direct", "event"))
    for model in e:
        rate = ann["break_even_rate_by_model"][model]
        lines.append(
            f"| `{model}` | {d[model]:.4g} | {e[model]:.4g} "
            f"| {r['energy_reduction_by_model'][model]:.2f}x | {ann['energy_nJ_by_model'][model]:.4g} "
            f"| {ann['event_reduction_by_model'][model]:.2f}x "
            f"| {'never' if rate is None else f'{rate:.3f}'} |"
        )
    lines += [
        "",
        f"E's mean hidden spike rate: {ann['event_spike_rate']:.4f}. NeuroBench (neurobench 2.3.0) "
        "against our counts on the same samples, per sample:",
        "",
        "| network | samples | effective ACs | ours ACs | effective MACs | ours MACs | dense "
        "| activation sparsity | membrane updates | footprint (bytes) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, net in r["networks"].items():
        nb, ours = net["neurobench"], net["ours"]
        lines.append(
            f"| {name} | {net['neurobench_samples']} | {nb['effective_acs']:,.0f} "
            f"| {ours['ac_per_sample']:,.0f} | {nb['effective_macs']:,.0f} "
            f"| {ours['mac_per_sample']:,.0f} | {nb['dense']:,.0f} "
            f"| {nb['activation_sparsity']:.4f} | {nb['membrane_updates']:,.0f} "
            f"| {nb['footprint_bytes']:,.0f} |"
        )
    lines += [
        "",
        f"The evaluation node took {r['after_s']:.1f} s with NeuroBench and the ANN against "
        f"{r['before_s']:.1f} s without (medians).",
    ]
    return "\n".join(lines)


def levers_section(key: str, slug: str, path: Path) -> str:
    """What each lever of E's energy gives on validation, from one run's E at one lambda
    (``benchmarks/levers.py``)."""
    r = json.loads(path.read_text())
    models = list(r["variants"][0]["reduction_by_model"])
    lines = [
        f"## Levers of E's energy, {DATASET_NAMES.get(key, key)} on `{slug}`",
        "",
        f"`{r['command']}`; {r['machine']}, torch {r['torch']}. One run's threshold-scaled E "
        f"fine-tuned at λ = {r['rate_lambda']:g} per variant, measured on "
        f"{r['validation_samples']} validation samples (D: {100 * r['direct_val_accuracy']:.2f} %).",
        "",
        "| variant | overrides | retention | "
        + " | ".join(f"`{m}`" for m in models)
        + " | `per_event` ceiling |",
        "|---|---|---|" + "---|" * len(models) + "---|",
    ]
    for v in r["variants"]:
        reductions = " | ".join(f"{v['reduction_by_model'][m]:.2f}x" for m in models)
        lines.append(
            f"| {v['variant']} | `{v['overrides'] or '-'}` | {v['retention']:.4f} | {reductions} "
            f"| {v['ceiling_by_model'].get('per_event', 0):.1f}x |"
        )
    return "\n".join(lines)


def candidates_section(key: str, slug: str, path: Path, default: SeedStudy | None) -> str:
    """The candidate defaults of ``key`` on ``slug`` beside the default's own study."""
    rows = [("default", "-", default)] if default is not None else []
    rows += [(n, c["params"], SeedStudy.model_validate(c["study"])) for n, c in
             json.loads(path.read_text()).items()]  # fmt: skip
    lines = [
        f"## Candidate defaults, {DATASET_NAMES.get(key, key)} on `{slug}`",
        "",
        "Each a study of seeds 0, 1, 2 with the overrides shown; a default changes only when its "
        "candidate meets the dataset's targets. Mean ± std (worst seed).",
        "",
        "| candidate | overrides | retention (worst) | "
        + " | ".join(f"`{m}` (worst)" for m in ENERGY_MODELS)
        + " | λ per seed |",
        "|---|---|---|" + "---|" * len(ENERGY_MODELS) + "---|",
    ]
    for name, params, study in rows:
        m, sd, w = study.mean, study.std, study.worst
        reductions = " | ".join(
            _reduction(m, sd, w, "energy_reduction_by_model", k) for k in ENERGY_MODELS
        )
        lambdas = ", ".join(f"{r.rate_lambda:.3g}" for r in study.runs)
        lines.append(
            f"| {name} | `{params}` | "
            f"{_pm(m['accuracy_retention'], sd['accuracy_retention'], digits=4)} "
            f"({w['accuracy_retention']:.4f}) | {reductions} | {lambdas} |"
        )
    return "\n".join(lines)


def results_page(root: Path = ROOT) -> str:
    """``docs/results.md``: every seed study per machine, then every other benchmark."""
    parts = [
        "# Results",
        "",
        "Written by `make results` from `benchmarks/results/`; each section names the command "
        "that made its file. Seeded runs repeat bit for bit only on the same CPU model, thread "
        "count and torch build.",
    ]
    for slug, studies in seed_studies(root).items():
        for key, study in studies.items():
            parts += [
                "",
                f"## {DATASET_NAMES.get(key, key)} on `{slug}`",
                "",
                f"`{BENCHMARKS[f'seeds-{key}'].command}`; {study.machine}, torch {study.torch}.",
                "",
                results_table({key: study}),
                "",
                _seed_rows(study),
            ]
            if study.shift is not None:
                parts += ["", shift_rows(study)]
    studies = seed_studies(root)
    for key in DATASET_NAMES:
        for slug, path in result_files(f"candidates-{key}", root).items():
            default = studies.get(slug, {}).get(key)
            parts += ["", candidates_section(key, slug, path, default)]
        for slug, path in result_files(f"energy-{key}", root).items():
            parts += ["", energy_section(key, slug, path)]
        for slug, path in result_files(f"levers-{key}", root).items():
            parts += ["", levers_section(key, slug, path)]
    parts += ["", "## Benchmarks", "", index_table(root)]
    return "\n".join(parts) + "\n"


def index_table(root: Path = ROOT) -> str:
    """One row per benchmark folder: the question, the command, the machines with a file."""
    lines = ["| benchmark | answers | command | machines |", "|---|---|---|---|"]
    folder = root / "benchmarks" / "results"
    for name in sorted(p.name for p in folder.iterdir() if p.is_dir() and p.name != "archive"):
        bench = BENCHMARKS.get(name, Benchmark(f"benchmarks/{name}.py", ""))
        machines = ", ".join(f"[`{s}`]({name}/{s}.json)" for s in result_files(name, root))
        lines.append(f"| `{name}` | {bench.answers} | `{bench.command}` | {machines} |")
    return "\n".join(lines)


def index_page(root: Path = ROOT) -> str:
    """``benchmarks/results/README.md``."""
    return (
        "# Benchmark results\n\n"
        "One folder per benchmark, one file per machine (`<vendor>-<family>-<vector units>-"
        "<cores>`), written by the benchmark's command; a rerun on the same machine replaces "
        "its file. Earlier experiments (variants of rules since replaced) are in "
        "[archive/](archive/README.md), each with the question it answered.\n\n"
        + index_table(root).replace("](", "](./")
        + "\n"
    )


def with_block(readme: str, block: str) -> str:
    """``readme`` with the text between its result markers replaced by ``block``."""
    if README_START not in readme or README_END not in readme:
        raise ValueError(f"README.md lacks the markers {README_START!r} ... {README_END!r}")
    head, rest = readme.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    return f"{head}{README_START}\n{block}\n{README_END}{tail}"


def pages(root: Path = ROOT) -> dict[Path, str]:
    """Every page the results command writes, as it would write it."""
    readme = root / "README.md"
    return {
        readme: with_block(readme.read_text(), readme_block(root)),
        root / "docs" / "results.md": results_page(root),
        root / "benchmarks" / "results" / "README.md": index_page(root),
    }


def stale_pages(root: Path = ROOT) -> list[Path]:
    """The pages whose text differs from what the result files say."""
    return [p for p, text in pages(root).items() if not p.exists() or p.read_text() != text]


def write_pages(root: Path = ROOT) -> list[Path]:
    """Rewrite every stale page; returns those rewritten."""
    stale = stale_pages(root)
    for path, text in pages(root).items():
        if path in stale:
            path.write_text(text)
    return stale
