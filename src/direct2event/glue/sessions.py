"""Kedro session ids unique across processes.

Kedro names a run, and the version every versioned dataset saves under, after its session id:
a UTC timestamp to the millisecond (``kedro.io.core.generate_timestamp``). Runs started in the
same millisecond (sweep workers, ``make seeds``, the concurrent-start test) got the same id and
the second save of ``direct_model.pkl`` failed ("must not exist if versioning is enabled").
The store below hands out
each id once per machine: under a file lock it keeps the last id issued and, when a new one
is not later, waits for the clock to pass it (a millisecond at most per run ahead).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from filelock import FileLock
from kedro.framework.session.store import BaseSessionStore
from kedro.io.core import generate_timestamp

LEDGER = Path(tempfile.gettempdir()) / "direct2event-session-ids"


def unique_session_id(proposed: str, ledger: Path = LEDGER) -> str:
    """``proposed`` (a Kedro timestamp), or the first later timestamp when this machine has
    already issued it or a later one; recorded as the last id issued."""
    with FileLock(f"{ledger}.lock", timeout=60):
        last = ledger.read_text().strip() if ledger.exists() else ""
        session_id = proposed
        while session_id <= last:  # the format sorts as time does
            time.sleep(0.0005)
            session_id = generate_timestamp()
        ledger.write_text(session_id)
    return session_id


class UniqueSessionStore(BaseSessionStore):
    """Kedro's in-memory session store whose ``session_id`` is unique on this machine."""

    def __setitem__(self, key: str, value: Any) -> None:
        if key == "session_id" and isinstance(value, str):
            value = unique_session_id(value)
        super().__setitem__(key, value)
