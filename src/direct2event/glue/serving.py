"""A registered network as an MLflow pyfunc model that takes raw inputs.

``mlflow.pyfunc.load_model("models:/<key>-event@champion").predict(images)`` returns class
probabilities: the model encodes its input itself with the encoding, T and seed it was
evaluated with, batch by batch exactly as the pipeline's evaluation does (so its predictions on
the test split are the ones behind the run's accuracy). Inputs: images in [0, 1] as
``[batch, C, H, W]`` (``[batch, H, W]`` when C is 1) for static datasets, event frames
``[batch, bins, C, H, W]`` (counts) for event datasets; numpy arrays, tensors or nested lists.

The model's code is this package (``code_paths``), which needs only torch, numpy and mlflow
at load time: this module imports nothing else of the project but the library.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import torch

from direct2event.snn.encoders import InputCoding
from direct2event.snn.models import SpikingNet, restore
from direct2event.snn.training import Split, encoded_batches

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # src/direct2event: the model's code path


# MLflow advises, once per subclass and inside its own warning filters, type hints on predict
# so that it can validate inputs; this model validates them itself (ServedNetwork.inputs, which
# names the layout expected), so the advice is kept off every command's output.
with warnings.catch_warnings(record=True):

    class ServedNetwork(mlflow.pyfunc.PythonModel):
        """Network D or E with its input coding: raw inputs in, class probabilities out."""

        def __init__(self, coding: InputCoding, input_shape: list[int], classes: int, seed: int):
            self.coding = coding
            self.input_shape = [int(v) for v in input_shape]
            self.classes = int(classes)
            self.seed = int(seed)
            self.network: SpikingNet | None = None

        def load_context(self, context: Any) -> None:
            saved = torch.load(context.artifacts["network"], map_location="cpu", weights_only=False)
            self.network = restore(saved)

        def inputs(self, model_input: Any) -> torch.Tensor:
            """``model_input`` as a float32 tensor of the stored input layout: float64 is cast,
            8-bit images are scaled from 0-255 to [0, 1], integer event counts are taken as
            they are; a wrong shape, a NaN or an infinity, or a type that cannot be an input is
            refused with a ValueError that names what is expected (never the data itself)."""
            if isinstance(model_input, dict):  # MLflow hands a named tensor input as {name: array}
                model_input = model_input.get("inputs", next(iter(model_input.values()), None))
            if hasattr(model_input, "to_numpy"):  # a DataFrame
                model_input = model_input.to_numpy()
            if isinstance(model_input, torch.Tensor):
                model_input = model_input.detach().cpu().numpy()
            array = np.asarray(model_input)
            events = self.coding.encoding == "frames"
            what = "event frames (counts)" if events else "images in [0, 1]"
            sample = ["bins", *self.input_shape] if events else self.input_shape
            layout = f"{what} shaped [batch, {', '.join(map(str, sample))}]"
            x = torch.as_tensor(self._as_float32(array, events, layout))
            if not events and x.dim() == len(self.input_shape) and self.input_shape[0] == 1:
                x = x.unsqueeze(1)  # [batch, H, W] of one-channel images
            tail = list(x.shape[-len(self.input_shape) :])
            if x.dim() != len(sample) + 1 or tail != self.input_shape:
                raise ValueError(f"expected {layout}, got shape {list(array.shape)}")
            if not bool(torch.isfinite(x).all()):
                raise ValueError(f"the input holds NaN or infinite values; expected {layout}")
            if not events and x.numel() and (x.min() < 0 or x.max() > 1):
                raise ValueError(
                    f"images must lie in [0, 1] (got {float(x.min()):g} to {float(x.max()):g}): "
                    "divide 8-bit images by 255, or pass them as uint8"
                )
            return x

        @staticmethod
        def _as_float32(array: np.ndarray, events: bool, layout: str) -> np.ndarray:
            """The input's values as float32, by its type (see :meth:`inputs`)."""
            kind = array.dtype.kind
            if kind == "f":
                return array.astype(np.float32, copy=False)
            if kind == "b" or (kind in "iu" and events):  # spikes or event counts
                return array.astype(np.float32)
            if array.dtype == np.uint8:  # 8-bit images: 0-255 to [0, 1]
                return array.astype(np.float32) / 255.0
            raise ValueError(
                f"inputs of type {array.dtype} are not {layout}: pass float32 or float64 "
                "images in [0, 1] or uint8 images in 0-255"
                + ("" if not events else ", or integer event counts")
            )

        @torch.no_grad()
        def predict(self, context, model_input, params=None) -> np.ndarray:
            """Class probabilities ``[batch, classes]`` (softmax of the time-averaged logits)."""
            if self.network is None:
                raise RuntimeError("the network is not loaded (load it with mlflow.pyfunc)")
            x = self.inputs(model_input)
            split = Split(x, torch.zeros(len(x), dtype=torch.long))
            device = torch.device("cpu")
            net = self.network.to(device).eval()
            logits = [
                net(inputs)
                for _, inputs in encoded_batches(split, self.coding, device, seed=self.seed)
            ]
            if not logits:
                return np.zeros((0, self.classes), np.float32)
            return torch.softmax(torch.cat(logits).float(), dim=1).numpy()
