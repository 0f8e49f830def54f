"""Plain containers for loaded data (numpy), shared by every loader."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

Kind = Literal["image", "events"]


@dataclass
class LabelledArrays:
    """Samples and integer labels.

    ``x`` is ``[N, C, H, W]`` float32 in [0, 1] for images, or ``[N, T, 2, H, W]`` uint8 event
    counts per time bin and polarity for event data.
    """

    x: np.ndarray
    y: np.ndarray

    def __post_init__(self) -> None:
        if len(self.x) != len(self.y):
            raise ValueError(f"{len(self.x)} samples but {len(self.y)} labels.")

    def __len__(self) -> int:
        return len(self.y)


@dataclass
class RawData:
    """A dataset as its source provides it: train and test parts, an optional validation part."""

    name: str
    kind: Kind
    classes: int
    train: LabelledArrays
    test: LabelledArrays
    val: LabelledArrays | None = None
    simulated: bool = False
    info: dict[str, object] = field(default_factory=dict)
