"""The registered E serves: `mlflow.pyfunc.load_model(...).predict(images)` in a process where
the project is not installed (its code comes with the model) gives the pipeline's predictions."""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest

from direct2event.data.static import load_digits
from direct2event.glue.serving import ServedNetwork
from direct2event.snn.encoders import InputCoding
from direct2event.snn.models import build_model, checkpoint
from tests.conftest import mlflow_store_kept, run

pytestmark = pytest.mark.slow  # a served model in a bare Python

SERVE = """
import json, sys
sys.path.append(sys.argv[1])  # site-packages without its .pth files: no editable project
import numpy as np, mlflow, mlflow.pyfunc
mlflow.set_tracking_uri("sqlite:///mlflow.db")
model = mlflow.pyfunc.load_model("models:/digits-event@champion")
import direct2event
x = np.load("test_x.npy")
probabilities = model.predict(x)
print(json.dumps({"package": direct2event.__file__, "p": probabilities.tolist()}))
"""


def test_the_champion_e_serves_raw_images_with_the_pipelines_predictions(project: Path) -> None:
    done = run(project, "digits.tuning.enabled=false,digits.tuning.retention_floor=0.5")
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((project / "data/08_reporting/digits/summary.json").read_text())
    test = load_digits().test
    assert len(test.y) == summary["splits"]["test"]  # the pipeline's test split: all of it
    np.save(project / "test_x.npy", test.x.astype(np.float32))
    (project / "serve.py").write_text(SERVE)
    site = sysconfig.get_paths()["purelib"]
    served = subprocess.run(
        [sys.executable, "-S", "serve.py", site],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert served.returncode == 0, served.stderr[-3000:]
    out = json.loads(served.stdout.strip().splitlines()[-1])
    assert "/artifacts/code/direct2event/" in out["package"]  # the model's own copy
    p = np.asarray(out["p"])
    assert p.shape == (len(test.y), 10) and np.allclose(p.sum(1), 1.0, atol=1e-5)
    accuracy = float((p.argmax(1) == test.y).mean())
    assert accuracy == summary["event"]["accuracy"]  # the same predictions as the pipeline's E


def test_wrong_shapes_and_ranges_are_refused_naming_the_layout() -> None:
    net = build_model("convnet", (1, 8, 8), 3, channels=(4,))
    served = ServedNetwork(InputCoding("rate", 4), [1, 8, 8], 3, seed=0)
    served.network = net.eval()
    images = np.random.default_rng(0).random((5, 8, 8), dtype=np.float32)
    p = served.predict(None, images)  # [batch, H, W] of one-channel images
    assert p.shape == (5, 3) and np.allclose(p.sum(1), 1.0, atol=1e-6)
    assert np.array_equal(p, served.predict(None, images[:, None]))  # deterministic: seeded
    with pytest.raises(ValueError, match=r"\[batch, 1, 8, 8\], got shape \[5, 2, 8, 8\]"):
        served.predict(None, np.zeros((5, 2, 8, 8), np.float32))
    with pytest.raises(ValueError, match="divide 8-bit images by 255"):
        served.predict(None, images * 255)
    frames = ServedNetwork(InputCoding("frames", 2), [1, 8, 8], 3, seed=0)
    frames.network = net.eval()
    assert frames.predict(None, np.ones((2, 4, 1, 8, 8), np.float32)).shape == (2, 3)
    with pytest.raises(
        ValueError, match=r"event frames \(counts\) shaped \[batch, bins, 1, 8, 8\]"
    ):
        frames.predict(None, images)
    assert checkpoint(net)["config"]["classes"] == 3


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory):
    """A served E as a user loads it: registered in a real MLflow store, loaded with pyfunc."""
    import mlflow

    from direct2event.glue import registry

    folder = tmp_path_factory.mktemp("served")
    with mlflow_store_kept():  # the store is this fixture's: restored for later modules
        mlflow.set_tracking_uri(f"sqlite:///{folder / 'mlflow.db'}")
        mlflow.set_registry_uri(f"sqlite:///{folder / 'mlflow.db'}")
        mlflow.set_experiment("serving")
        net = build_model("convnet", (1, 8, 8), 3, channels=(4,))
        with mlflow.start_run():
            uri = registry.register(net, "digits", "event", {}, InputCoding("rate", 4), seed=0)
        model = mlflow.pyfunc.load_model(uri)
    images = np.random.default_rng(0).random((5, 1, 8, 8))  # float64
    return model, images


def test_the_loaded_model_casts_float64_and_scales_8_bit_images(loaded) -> None:
    model, images = loaded
    p = model.predict(images.astype(np.float32))
    assert p.shape == (5, 3) and p.dtype == np.float32
    assert np.array_equal(model.predict(images), p)  # float64: cast to float32
    eight_bit = np.round(images * 255).astype(np.uint8)
    scaled = eight_bit.astype(np.float32) / 255.0
    assert np.array_equal(model.predict(eight_bit), model.predict(scaled))


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (
            np.zeros((5, 2, 8, 8), np.float32),
            r"images in \[0, 1\] shaped \[batch, 1, 8, 8\], got shape \[5, 2, 8, 8\]",
        ),
        (np.zeros((5, 64), np.float32), r"shaped \[batch, 1, 8, 8\], got shape \[5, 64\]"),
        (np.full((2, 1, 8, 8), np.nan, np.float32), "NaN or infinite values"),
        (np.full((2, 1, 8, 8), np.inf), "NaN or infinite values"),
        (np.full((2, 1, 8, 8), 3.0), "divide 8-bit images by 255"),
        (np.ones((2, 1, 8, 8), np.int64), "inputs of type int64 are not images"),
    ],
)
def test_the_loaded_model_refuses_bad_input_naming_what_it_expects(loaded, bad, message) -> None:
    import mlflow

    model, _ = loaded
    with pytest.raises((ValueError, mlflow.exceptions.MlflowException), match=message) as err:
        model.predict(bad)
    assert "[[" not in str(err.value)  # the data itself is never dumped
