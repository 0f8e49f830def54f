"""The results page's shift tables, from the committed seed studies (benchmarks/results)."""

from __future__ import annotations

from pathlib import Path

import pytest

from direct2event.glue.reports import SeedStudy
from direct2event.glue.shift_results import shift_rows

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("key", ["mnist", "nmnist_sim"])
def test_each_method_has_its_row_and_the_stage_its_share(key: str) -> None:
    files = sorted((ROOT / "benchmarks" / "results" / f"seeds-{key}").glob("*.json"))
    assert files, f"no committed seed study of {key}"
    study = SeedStudy.model_validate_json(files[0].read_text())
    assert study.shift is not None and study.shift.stage_share is not None
    text = shift_rows(study)
    for method, figures in study.shift.methods.items():
        rec = figures.recovered_fraction
        assert f"| `{method}` | {rec.mean:.2f} ± {rec.std:.2f} ({rec.worst:.2f}) |" in text
    share = study.shift.stage_share
    assert (
        f"{100 * share['mean']:.1f} % of the run (worst seed {100 * share['worst']:.1f} %)" in text
    )
    assert ("With the clean front" in text) == (key == "nmnist_sim")  # event data only
