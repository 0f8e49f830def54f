"""A user's own shift, named in the parameters by its import path (used by test_nodes)."""

from __future__ import annotations

import torch


def dim_rows(x: torch.Tensor, severity: float, generator: torch.Generator) -> torch.Tensor:
    """Every other image row dimmed by ``severity`` (a rolling-shutter artefact)."""
    out = x.clone()
    out[..., ::2, :] *= 1.0 - severity
    return out
