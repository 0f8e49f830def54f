"""Safe points: where the library's long loops let the caller stop them.

Every training step and every inference batch calls :func:`safe_point`. It runs the checks a
caller registered (none by default, so the library alone behaves as plain PyTorch code); a check
stops the loop by raising. The pipelines register one check, "has a stop signal arrived?", so
a stop whose exception Python dropped (a signal that landed in a weakref callback or a
destructor, where Python ignores exceptions) still ends the work at the next step.
"""

from __future__ import annotations

from collections.abc import Callable

Check = Callable[[], None]
_CHECKS: list[Check] = []


def add_check(check: Check) -> None:
    """Run ``check`` at every safe point from now on (once, however often it is added)."""
    if check not in _CHECKS:
        _CHECKS.append(check)


def remove_check(check: Check) -> None:
    """Stop running ``check`` at safe points (nothing happens when it was not added)."""
    if check in _CHECKS:
        _CHECKS.remove(check)


def safe_point() -> None:
    """Run the registered checks; an exception a check raises ends the loop that called this."""
    for check in _CHECKS:
        check()
