"""The README's results and docs/results.md are written from result files, never typed: the
committed pages equal what ``make results`` writes, and the table says what the files hold."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from direct2event.glue import results
from direct2event.glue.machine import ROOT, machine_slug, result_path
from direct2event.glue.reports import SeedRun
from direct2event.glue.seed_study import aggregate


def seed_run(seed: int, retention: float, reduction: float) -> SeedRun:
    return SeedRun(
        seed=seed,
        direct_accuracy=0.99,
        event_accuracy=0.99 * retention,
        accuracy_retention=retention,
        energy_reduction=reduction,
        energy_reduction_by_model={"per_event": reduction, "synops_45nm": 2 * reduction},
        ann_event_reduction_by_model={"memory_45nm": reduction / 10},
        neurobench_event={"effective_acs": 30000.0 + 1000 * seed, "activation_sparsity": 0.9},
        energy_reduction_ceiling=30.0,
        events_per_sample=1000.0,
        synops_per_sample=5000.0,
        rate_lambda=1.5 + seed,
        seconds=100.0,
    )


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project tree holding this repository's README and a three-seed MNIST study."""
    (tmp_path / "docs" / "img").mkdir(parents=True)
    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    shutil.copyfile(ROOT / "README.md", tmp_path / "README.md")
    runs = [seed_run(0, 0.998, 10.0), seed_run(1, 0.996, 12.0), seed_run(2, 0.997, 11.0)]
    study = aggregate("mnist", runs, {"machine": "Test CPU (AVX2), 2 cores", "torch": "2.13.0"})
    folder = tmp_path / "data" / "08_reporting" / "mnist"
    folder.mkdir(parents=True)
    (folder / "seeds.json").write_text(study.model_dump_json())
    return tmp_path


def test_the_committed_pages_are_what_the_result_files_say() -> None:
    """`make results` would change nothing: no figure in them was typed or left stale."""
    assert results.stale_pages(ROOT) == []


def test_the_readme_is_a_front_door() -> None:
    """At most 160 lines; machines are named only in the written results."""
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 160
    outside = readme.split(results.README_START)[0] + readme.split(results.README_END)[1]
    assert not re.search(r"EPYC|Xeon|AVX|AMX|\d+-core|\d{4}-\d{2}-\d{2}", outside)


def test_a_taken_study_becomes_the_table_with_its_figures(project: Path) -> None:
    target = results.take_seed_study("mnist", project)
    assert target == result_path("seeds-mnist", project / "benchmarks" / "results")
    written = results.write_pages(project)
    assert set(written) == {
        project / "README.md",
        project / "docs" / "results.md",
        project / "benchmarks" / "results" / "README.md",
    }
    readme = (project / "README.md").read_text()
    block = readme.split(results.README_START)[1].split(results.README_END)[0]
    row = next(line for line in block.splitlines() if line.startswith("| MNIST"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    # accuracy 99 % on every seed; retention 0.997 +- 0.001, worst 0.996; per_event 11 +- 1,
    # worst 10; synops_45nm twice that; lambda per seed
    assert cells == [
        "MNIST",
        "0, 1, 2",
        "99.00 ± 0.00 %",
        "98.70 ± 0.10 %",
        "0.9970 ± 0.0010 (0.9960)",
        "11.00x ± 1.00 (10.00x)",
        "22.00x ± 2.00 (20.00x)",
        "-",  # no memory_45nm reduction in this study: said, not invented
        "1.10x ± 0.10 (1.00x)",
        "31,000 ACs, 0.900",
        "1.5, 2.5, 3.5",
    ]
    assert "Test CPU (AVX2), 2 cores, torch 2.13.0" in block
    assert "no `make bench` result" in block  # no speed file yet: said, not invented
    page = (project / "docs" / "results.md").read_text()
    assert f"## MNIST on `{machine_slug()}`" in page and "| 1 | 99.00 % |" in page
    index = (project / "benchmarks" / "results" / "README.md").read_text()
    assert f"[`{machine_slug()}`](./seeds-mnist/{machine_slug()}.json)" in index
    assert results.stale_pages(project) == [] and results.write_pages(project) == []


def test_the_speed_line_is_the_ratio_to_the_best_peer(project: Path) -> None:
    results.take_seed_study("mnist", project)
    speed = result_path("speed", project / "benchmarks" / "results")
    speed.parent.mkdir(parents=True)
    times = {"ours": 50.0, "spikingjelly": 100.0, "snntorch": 80.0, "dense_floor": 45.0}
    case = {"name": "mnist_convnet", "batch": 64, "timesteps": 4, "train_step_ms": times,
            "infer_ms": {**times, "ours": 20.0}, "peak_mem_mb": {**times, "ours": 40.0}}  # fmt: skip
    speed.write_text(json.dumps({"cases": [case]}))
    line = results.speed_line(project, machine_slug())
    assert "a training step 1.60x as fast as the best peer (snntorch)" in line
    assert "inference 4.00x (snntorch)" in line and "2.00x less peak memory" in line


def test_a_study_of_too_few_seeds_or_none_is_refused_with_the_command(project: Path) -> None:
    with pytest.raises(FileNotFoundError, match="make seeds KEY=nmnist_sim"):
        results.take_seed_study("nmnist_sim", project)
    path = project / "data" / "08_reporting" / "mnist" / "seeds.json"
    study = json.loads(path.read_text())
    study["seeds"], study["runs"] = [0], study["runs"][:1]
    path.write_text(json.dumps(study))
    with pytest.raises(ValueError, match="1 seed"):
        results.take_seed_study("mnist", project)


def test_a_candidate_default_sits_beside_the_default_and_keeps_its_overrides(
    project: Path,
) -> None:
    results.take_seed_study("mnist", project)
    runs = [seed_run(0, 0.997, 12.0), seed_run(1, 0.995, 14.0), seed_run(2, 0.996, 13.0)]
    study = aggregate("mnist", runs, {"machine": "Test CPU (AVX2), 2 cores", "torch": "2.13.0"})
    folder = project / "data" / "08_reporting" / "mnist" / "longer"
    folder.mkdir(parents=True)
    (folder / "seeds.json").write_text(study.model_dump_json())
    with pytest.raises(FileNotFoundError, match='PARAMS="mnist.x=1" NAME=other'):
        results.take_candidate("mnist", "other", "mnist.x=1", project)
    target = results.take_candidate("mnist", "longer", "mnist.transfer.finetune.epochs=5", project)
    assert target == result_path("candidates-mnist", project / "benchmarks" / "results")
    results.write_pages(project)
    page = (project / "docs" / "results.md").read_text()
    section = page.split("## Candidate defaults, MNIST")[1].split("\n## ")[0]
    rows = [line for line in section.splitlines() if line.startswith("| default") or
            line.startswith("| longer")]  # fmt: skip
    assert rows == [
        "| default | `-` | 0.9970 ± 0.0010 (0.9960) | 11.00x ± 1.00 (10.00x) "
        "| 22.00x ± 2.00 (20.00x) | - | 1.5, 2.5, 3.5 |",
        "| longer | `mnist.transfer.finetune.epochs=5` | 0.9960 ± 0.0010 (0.9950) "
        "| 13.00x ± 1.00 (12.00x) | 26.00x ± 2.00 (24.00x) | - | 1.5, 2.5, 3.5 |",
    ]
    # the README's table stays the default's
    assert "13.00x" not in (project / "README.md").read_text()


def test_a_readme_without_its_markers_is_named() -> None:
    with pytest.raises(ValueError, match="markers"):
        results.with_block("# a README\n", "table")
