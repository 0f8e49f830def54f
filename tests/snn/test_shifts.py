"""Image shifts: deterministic under a seed, monotone in severity, user shifts by import path."""

from __future__ import annotations

import sys

import pytest
import torch

from direct2event.snn.shifts import IMAGE_SEVERITIES, IMAGE_SHIFTS, load_function


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    """Bright strokes on black, like digits: 16 images of 28 x 28."""
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(16, 1, 28, 28)
    for i in range(16):
        r, c = torch.randint(4, 20, (2,), generator=g).tolist()
        x[i, 0, r : r + 8, c : c + 3] = 1.0
        x[i, 0, r + 3 : r + 5, c : c + 8] = 0.8
    return x


def gen(seed: int = 1) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("name", sorted(IMAGE_SHIFTS))
def test_each_shift_repeats_under_its_seed_and_keeps_the_range(name, images):
    fn, severity = IMAGE_SHIFTS[name], IMAGE_SEVERITIES[name][1]
    a, b = fn(images, severity, gen(3)), fn(images, severity, gen(3))
    assert torch.equal(a, b)
    assert a.shape == images.shape and a.min() >= 0 and a.max() <= 1
    assert not torch.equal(a, images)  # every built-in severity changes the images


# One measured property per shift that must grow with severity.
PROPERTIES = {
    "gaussian_noise": lambda x, s: (s - x).pow(2).mean(),
    "impulse_noise": lambda x, s: (s != x).float().mean(),
    "blur": lambda x, s: -(s[..., 1:] - s[..., :-1]).abs().mean(),  # less edge energy
    "contrast": lambda x, s: -s.std(dim=(1, 2, 3)).mean(),
    "brightness": lambda x, s: s.mean(),
    "rotation": lambda x, s: (s - x).abs().mean(),
    "occlusion": lambda x, s: (s == 0).float().mean(),
}


@pytest.mark.parametrize("name", sorted(IMAGE_SHIFTS))
def test_each_shift_is_monotone_in_severity(name, images):
    values = [
        float(PROPERTIES[name](images, IMAGE_SHIFTS[name](images, s, gen(5))))
        for s in IMAGE_SEVERITIES[name]
    ]
    assert values[0] < values[1] < values[2], values


def test_contrast_scales_deviations_exactly(images):
    out = IMAGE_SHIFTS["contrast"](images, 0.7, gen())
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    assert torch.allclose(out - mean, 0.3 * (images - mean), atol=1e-6)


def test_a_user_shift_by_import_path_runs(tmp_path, monkeypatch, images):
    (tmp_path / "my_shifts.py").write_text(
        "def invert(x, severity, generator):\n    return severity * (1 - x) + (1 - severity) * x\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    fn = load_function("my_shifts:invert")
    out = fn(images, 1.0, gen())
    assert torch.allclose(out, 1 - images)
    sys.modules.pop("my_shifts", None)


@pytest.mark.parametrize(
    "path, message",
    [
        ("no_colon", "not an import path"),
        ("surely_missing_module_x:f", "Cannot import"),
        ("direct2event.snn.shifts:nothing_here", "has no function"),
    ],
)
def test_a_bad_import_path_names_the_fix(path, message):
    with pytest.raises(ValueError, match=message):
        load_function(path)
