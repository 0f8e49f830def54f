"""Fixtures of the library's tests: a count of the compiled kernels' calls, so a test that
compares the kernel with PyTorch can show the kernel really ran (not PyTorch twice)."""

from __future__ import annotations

import shutil
from collections import Counter
from collections.abc import Iterator

import pytest

from direct2event.snn import kernels

KERNEL_ENTRIES = ("lif_forward", "lif_backward", "maxpool2_forward", "maxpool2_backward")


def require_compiler() -> None:
    """The CPU kernels are part of the project: a machine without a C compiler fails their
    tests, saying what to install (it does not skip them)."""
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.fail("no C compiler: install one (apt-get install gcc) to build the CPU kernels")


@pytest.fixture
def kernel_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[Counter]:
    """Counts each call of the kernels' entry points; the real kernels still do the work."""
    require_compiler()
    calls: Counter = Counter()
    for name in KERNEL_ENTRIES:
        real = getattr(kernels, name)

        def counted(*args, _real=real, _name=name, **kwargs):
            calls[_name] += 1
            return _real(*args, **kwargs)

        monkeypatch.setattr(kernels, name, counted)
    yield calls
