"""The library must run where only torch and numpy are installed (e.g. a bare GPU machine)."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import builtins, importlib
real_import = builtins.__import__
blocked = ("kedro", "mlflow", "sklearn", "tqdm", "tonic", "pydantic", "matplotlib", "optuna")
def guarded(name, *args, **kwargs):
    if name.split(".")[0] in blocked:
        raise ImportError(f"{name} is not installed here")
    return real_import(name, *args, **kwargs)
builtins.__import__ = guarded
import torch
from direct2event.snn.encoders import InputCoding
from direct2event.snn import calibration, conversion, energy, evaluation, finetuning, losses
from direct2event.snn import nir_io, ops, thresholds
from direct2event.snn.models import build_model
from direct2event.snn.training import FitConfig, Split, fit
net = build_model("convnet", (1, 8, 8), 3, channels=(4,))
data = Split(torch.rand(16, 1, 8, 8), torch.randint(0, 3, (16,)))
cfg = FitConfig(epochs=1, lr=1e-2, batch_size=8, coding=InputCoding("analog", 2))
history = fit(net, data, cfg, torch.device("cpu"))
print("ok", len(history))
"""


def test_library_needs_only_torch_and_numpy() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], check=False, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "ok 1"
