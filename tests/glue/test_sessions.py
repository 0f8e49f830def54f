from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from kedro.io.core import generate_timestamp

from direct2event import settings
from direct2event.glue.sessions import UniqueSessionStore, unique_session_id


def test_the_same_timestamp_is_issued_once(tmp_path: Path) -> None:
    ledger = tmp_path / "ids"
    stamp = generate_timestamp()
    first = unique_session_id(stamp, ledger)
    second = unique_session_id(stamp, ledger)  # a run started in the same millisecond
    assert first == stamp and second > first and ledger.read_text() == second
    # an id older than the last one issued is replaced by a later one too
    assert unique_session_id("2020-01-01T00.00.00.000Z", ledger) > second


def test_processes_started_together_get_distinct_ids(tmp_path: Path) -> None:
    ledger = tmp_path / "ids"
    stamp = generate_timestamp()
    with ProcessPoolExecutor(4) as pool:
        ids = list(pool.map(unique_session_id, [stamp] * 8, [ledger] * 8))
    assert len(set(ids)) == 8 and min(ids) == stamp


def test_the_project_store_makes_the_session_id_unique() -> None:
    assert settings.SESSION_STORE_CLASS is UniqueSessionStore
    stamp = generate_timestamp()
    stores = [UniqueSessionStore(path="", session_id=stamp) for _ in range(2)]
    for store in stores:  # what KedroSession.create does with the id it made
        store.update({"session_id": stamp, "project_path": "p"})
    assert stores[0]["session_id"] != stores[1]["session_id"]
    assert stores[0]["project_path"] == "p"
