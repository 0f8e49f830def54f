"""A network trained in snnTorch, exported by snnTorch to NIR: the source for
``source_model: nir:<path>`` (network D from another framework).

    python benchmarks/snntorch_source.py [--out data/01_raw/snntorch_digits.nir] [--epochs 12]

A small convolutional SNN with snnTorch's ``Leaky`` neurons (beta 0.5, reset to zero, its
default threshold 1 and ATan surrogate), fed the analog image at each of T = 4 steps, read out
as the time-averaged output of a last linear layer: trained on the digits train split, measured
on the digits test split (the pipeline's test split: all of scikit-learn's held-out digits),
exported with ``snntorch.export_nir.export_to_nir`` and written with ``nir.write``. Its accuracy
and settings go to ``<out>.json``, for the comparison with this project's reading of the graph.

Needs snnTorch (``pip install --no-deps snntorch==1.0.0``: its metadata would replace the CPU
torch) and nir. Reset to zero, because snnTorch's reset by subtraction removes the threshold
after the leak (``beta * v + x - theta``) where NIR's readers and this project subtract before it.
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import nir
import numpy as np
import snntorch as snn
import snntorch.utils
import torch
from snntorch.export_nir import export_to_nir
from torch import nn

from direct2event.data.splits import make_splits
from direct2event.data.static import load_digits

T = 4
BETA = 0.5


def leaky(shape: tuple[int, ...]) -> snn.Leaky:
    """snnTorch's Leaky neuron with its parameters given per neuron: snnTorch exports them as
    they are, and NIR's type inference needs full neuron shapes (scalar parameters of a layer
    after a convolution fail ``export_to_nir``'s ``infer_types``)."""
    return snn.Leaky(
        beta=torch.full(shape, BETA),
        threshold=torch.ones(shape),
        init_hidden=True,
        reset_mechanism="zero",
    )


class Readout(nn.Module):
    """snnTorch layers in a sequence, stepped T times; logits = mean of the last layer's output."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1),
            leaky((8, 8, 8)),
            nn.AvgPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1),
            leaky((16, 4, 4)),
            nn.AvgPool2d(2),
            nn.Flatten(),
            nn.Linear(64, 32),
            leaky((32,)),
            nn.Linear(32, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: images ``[B, 1, 8, 8]`` in [0, 1], fed unchanged at every step."""
        snn.utils.reset(self.net)
        return torch.stack([self.net(x) for _ in range(T)]).mean(0)


def accuracy(model: Readout, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("data/01_raw/snntorch_digits.nir"))
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    raw = load_digits()
    splits = make_splits(raw, 0.05, 0.1, args.seed)  # the digits pipeline's split fractions
    train, test = splits.train, splits.test
    model = Readout()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(args.seed)
    for epoch in range(args.epochs):
        for idx in torch.randperm(len(train), generator=gen).split(64):
            loss = nn.functional.cross_entropy(model(train.x[idx].float()), train.y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        print(f"epoch {epoch + 1}: test accuracy {accuracy(model, test.x.float(), test.y):.4f}")
    model.eval()
    test_accuracy = accuracy(model, test.x.float(), test.y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        snn.utils.reset(model.net)
        graph = export_to_nir(model.net, test.x[:1].float(), ignore_dims=[0])  # no batch dim
    args.out.parent.mkdir(parents=True, exist_ok=True)
    nir.write(str(args.out), graph)
    record = {
        "framework": f"snntorch {snn.__version__}",
        "timesteps": T,
        "beta": BETA,
        "reset": "zero",
        "test_samples": len(test),
        "test_accuracy": test_accuracy,
        "test_predictions": model(test.x.float()).argmax(1).tolist(),
        "nodes": {k: type(v).__name__ for k, v in graph.nodes.items()},
    }
    args.out.with_suffix(".json").write_text(json.dumps(record, indent=1))
    print(f"wrote {args.out}: snnTorch test accuracy {test_accuracy:.4f} on {len(test)} digits")
    np.random.seed(0)


if __name__ == "__main__":
    main()
