"""Masking: no password of a storage URL, tracking URI or DSN reaches a log record."""

from __future__ import annotations

import logging

import pytest

from direct2event.glue.masking import MaskingFilter, mask_credentials, masked
from tests.glue.test_params import validate_params


def test_log_records_are_masked_by_the_handlers_filter() -> None:
    record = logging.LogRecord(
        "x", logging.INFO, __file__, 1, "storage %s", ("postgresql://a:Pw77x@h/db",), None
    )
    assert MaskingFilter().filter(record)
    assert record.getMessage() == "storage postgresql://a:***@h/db"


def test_nested_values_are_masked_and_other_values_kept() -> None:
    value = {"a": ["postgresql://u:pw1234@h/db", 3], "b": ("x", "password=hunter22")}
    assert masked(value) == {"a": ["postgresql://u:***@h/db", 3], "b": ("x", "password=***")}
    assert mask_credentials("sqlite:///data/optuna.db") == "sqlite:///data/optuna.db"


def test_every_credential_form_is_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    """URL user:password, libpq's password= (URL query and DSN), PGPASSWORD's value."""
    assert (
        mask_credentials("postgresql+psycopg2://d2e@h:5433/optuna?sslmode=disable&password=Pw77x")
        == "postgresql+psycopg2://d2e@h:5433/optuna?sslmode=disable&password=***"
    )
    assert mask_credentials("host=h user=d2e password=Pw77x dbname=optuna") == (
        "host=h user=d2e password=*** dbname=optuna"
    )
    monkeypatch.setenv("PGPASSWORD", "Env-Secret-9")
    assert mask_credentials("connection failed for Env-Secret-9") == "connection failed for ***"
    logged = validate_params(
        "digits", {"tuning": {"storage": "postgresql://u@h/o?password=Pw77x"}}
    ).loggable()
    assert logged["tuning.storage"] == "postgresql://u@h/o?password=***"
