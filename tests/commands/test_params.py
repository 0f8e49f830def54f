"""`python -m direct2event params <key>`: a dataset's effective parameters."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from direct2event.commands.params import main

ROOT = Path(__file__).resolve().parents[2]


def test_effective_parameters_are_printed(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.chdir(ROOT)
    assert main(["digits"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["training"]["epochs"] == 8  # from parameters_digits.yml
    assert printed["training"]["weight_decay"] == 1e-4  # a default
    assert printed["transfer"]["finetune"]["epochs"] == 3
    with pytest.raises(SystemExit) as exit_info:
        main(["mnsit"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'mnsit'" in capsys.readouterr().err


def test_bad_parameters_stop_with_the_key_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf = tmp_path / "conf" / "base"
    conf.mkdir(parents=True)
    (tmp_path / "conf" / "local").mkdir()
    for name in ("parameters_energy.yml",):
        (conf / name).write_text((ROOT / "conf/base" / name).read_text())
    (conf / "parameters_digits.yml").write_text("digits:\n  training:\n    lr: -1\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit, match=r"digits\.training\.lr"):
        main(["digits"])
