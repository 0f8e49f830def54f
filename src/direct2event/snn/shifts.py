"""Distribution shifts of images, at graded severities, for the shift benchmark.

A shift is a plain function ``f(x, severity, generator) -> x'`` on a batch ``[N, C, H, W]`` of
float images in [0, 1]; its randomness comes only from ``generator``, so it repeats under a seed.
Built-in shifts are named in :data:`IMAGE_SHIFTS` with their default severities in
:data:`IMAGE_SEVERITIES` (mild, middle, strong); a user's own shift is any function with the
same signature, named by its import path ``package.module:function`` (:func:`load_function`).
Event-stream shifts (tonic transforms) live in :mod:`direct2event.data.event_shifts`.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

ImageShift = Callable[[Tensor, float, torch.Generator], Tensor]


def gaussian_noise(x: Tensor, severity: float, generator: torch.Generator) -> Tensor:
    """Additive sensor noise of standard deviation ``severity`` (clipped to [0, 1])."""
    noise = torch.randn(x.shape, generator=generator, dtype=x.dtype)
    return (x + severity * noise).clamp(0.0, 1.0)


def impulse_noise(x: Tensor, severity: float, generator: torch.Generator) -> Tensor:
    """Salt-and-pepper: a fraction ``severity`` of the pixels set to 0 or 1 at random."""
    u = torch.rand(x.shape, generator=generator, dtype=x.dtype)
    salt = torch.rand(x.shape, generator=generator, dtype=x.dtype) < 0.5
    hit = u < severity
    return torch.where(hit, salt.to(x.dtype), x)


def blur(x: Tensor, severity: float, generator: torch.Generator) -> Tensor:
    """Gaussian defocus blur of standard deviation ``severity`` pixels."""
    radius = max(1, math.ceil(3 * severity))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype)
    k = torch.exp(-(t**2) / (2 * severity**2))
    k = k / k.sum()
    c = x.shape[1]
    out = F.conv2d(
        F.pad(x, (radius, radius, 0, 0), mode="replicate"),
        k.view(1, 1, 1, -1).repeat(c, 1, 1, 1),
        groups=c,
    )
    return F.conv2d(
        F.pad(out, (0, 0, radius, radius), mode="replicate"),
        k.view(1, 1, -1, 1).repeat(c, 1, 1, 1),
        groups=c,
    )


def contrast(x: Tensor, severity: float, generator: torch.Generator) -> Tensor:
    """Contrast reduced by the fraction ``severity`` around each image's mean."""
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return mean + (1.0 - severity) * (x - mean)


def brightness(x: Tensor, severity: float, generator: torch.Generator) -> Tensor:
    """Brightness offset ``+severity`` (clipped to [0, 1])."""
    return (x + severity).clamp(0.0, 1.0)


def rotation(x: Tensor, severity: float, generator: torch.Generator) -> Tensor:
    """Rotation by ``severity`` degrees, clockwise or counter-clockwise at random per image, with
    a shear of a third of that angle (a tilted, slanted view)."""
    n = x.shape[0]
    sign = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    angle = sign * math.radians(severity)
    shear = sign * math.tan(math.radians(severity / 3))
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1] = cos, -sin + shear
    theta[:, 1, 0], theta[:, 1, 1] = sin, cos
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False, padding_mode="zeros")


def occlusion(x: Tensor, severity: float, generator: torch.Generator) -> Tensor:
    """A black square of side ``severity`` times the image side at a random place per image."""
    n, _, h, w = x.shape
    side_h, side_w = max(1, round(severity * h)), max(1, round(severity * w))
    top = torch.randint(0, h - side_h + 1, (n,), generator=generator)
    left = torch.randint(0, w - side_w + 1, (n,), generator=generator)
    rows = torch.arange(h).view(1, h, 1)
    cols = torch.arange(w).view(1, 1, w)
    inside = (
        (rows >= top.view(n, 1, 1))
        & (rows < (top + side_h).view(n, 1, 1))
        & (cols >= left.view(n, 1, 1))
        & (cols < (left + side_w).view(n, 1, 1))
    )
    return torch.where(inside.unsqueeze(1), torch.zeros((), dtype=x.dtype), x)


IMAGE_SHIFTS: dict[str, ImageShift] = {
    "gaussian_noise": gaussian_noise,
    "impulse_noise": impulse_noise,
    "blur": blur,
    "contrast": contrast,
    "brightness": brightness,
    "rotation": rotation,
    "occlusion": occlusion,
}

# Mild, middle and strong; the units are each function's (std, fraction, px, fraction, offset,
# degrees, side fraction).
IMAGE_SEVERITIES: dict[str, tuple[float, float, float]] = {
    "gaussian_noise": (0.2, 0.35, 0.5),
    "impulse_noise": (0.05, 0.1, 0.2),
    "blur": (0.7, 1.0, 1.5),
    "contrast": (0.5, 0.7, 0.85),
    "brightness": (0.2, 0.35, 0.5),
    "rotation": (15.0, 30.0, 45.0),
    "occlusion": (0.25, 0.35, 0.5),
}


PROBE_SHAPE = (2, 1, 16, 16)  # the two samples a user's shift is tried on before any work


def probe_image_shift(fn: ImageShift, severities: list[float], name: str) -> None:
    """Run a user's image shift on two samples at each severity and refuse what the stage could
    not use, naming the shift and what was expected: a tensor of the input's shape and float
    dtype, finite, in [0, 1]."""
    x = torch.rand(PROBE_SHAPE, generator=torch.Generator().manual_seed(0))
    for severity in severities:
        where = f"shift '{name}' at severity {severity}"
        try:
            out = fn(x.clone(), severity, torch.Generator().manual_seed(0))
        except Exception as err:
            raise ValueError(f"{where} failed on 2 probe images {list(x.shape)}: {err!r}") from err
        if not isinstance(out, Tensor):
            raise ValueError(f"{where} returned {type(out).__name__}; expected a torch.Tensor.")
        if tuple(out.shape) != tuple(x.shape):
            raise ValueError(
                f"{where} returned shape {list(out.shape)} for images {list(x.shape)}; a shift "
                "must keep the batch's shape [N, C, H, W]."
            )
        if not out.dtype.is_floating_point:
            raise ValueError(f"{where} returned dtype {out.dtype}; expected float images.")
        if not bool(torch.isfinite(out).all()) or out.min() < 0 or out.max() > 1:
            raise ValueError(
                f"{where} returned values in [{float(out.min()):.3g}, {float(out.max()):.3g}] "
                "(or NaN/Inf); images are in [0, 1]: clamp the result."
            )


def load_function(path: str) -> Callable:
    """The function named ``package.module:function`` (a user's own shift)."""
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(
            f"'{path}' is not an import path: write 'package.module:function' (the module must "
            "be importable, e.g. installed or on PYTHONPATH)."
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(f"Cannot import '{module_name}' for shift '{path}': {err}.") from err
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ValueError(f"'{module_name}' has no function '{attr}' (shift '{path}').")
    return fn
