"""A user's own shift, named in the parameters by its import path (used by test_nodes)."""

from __future__ import annotations

import torch


def dim_rows(x: torch.Tensor, severity: float, generator: torch.Generator) -> torch.Tensor:
    """Every other image row dimmed by ``severity`` (a rolling-shutter artefact)."""
    out = x.clone()
    out[..., ::2, :] *= 1.0 - severity
    return out


def crop(x: torch.Tensor, severity: float, generator: torch.Generator) -> torch.Tensor:
    """A wrong shift: it crops, so E cannot read its output (refused before any work)."""
    return x[..., 1:, 1:]


def overexpose(x: torch.Tensor, severity: float, generator: torch.Generator) -> torch.Tensor:
    """A wrong shift: values past 1 (refused before any work)."""
    return x * (1.0 + severity)


def fails_at_strong(x: torch.Tensor, severity: float, generator: torch.Generator) -> torch.Tensor:
    """Sound on probes and at mild severities, failing on the test images' size at the strong
    one: a shift that fails mid-stage (the stage names it and keeps the rest)."""
    if severity > 0.5 and x.shape[-1] != 16:
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")
    return x * (1.0 - severity)


def unchanged(x: torch.Tensor, severity: float, generator: torch.Generator) -> torch.Tensor:
    """A shift E cannot see (as a uniform slow-down is to frames spanning each recording)."""
    return x.clone()
