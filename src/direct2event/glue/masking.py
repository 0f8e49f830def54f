"""Secrets never reach a log, a parameter, a tag or a report: the one place that masks them.

A storage URL, a tracking URI or a DSN may carry a password; every text the project writes
(logged parameters, tuning reports, log records of any library) goes through
:func:`mask_credentials` first.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any

_CREDENTIALS = re.compile(r"(?P<scheme>[a-zA-Z][\w+.-]*://)(?P<user>[^:/@\s]+):[^@/\s]+@")
# libpq's key=value forms: ``...?password=secret&...`` in a URL, ``password=secret`` in a DSN
_KEY_VALUE = re.compile(
    r"(?i)\b(?P<key>password|passwd|pwd)(?P<eq>\s*=\s*)(?P<value>[^&\s'\",;)]+)"
)
SECRET_ENV = ("PGPASSWORD", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")


def mask_credentials(text: str) -> str:
    """Every secret of a storage URL or tracking URI masked, wherever ``text`` holds it:
    ``postgresql://user:secret@host/db`` -> ``postgresql://user:***@host/db``, the libpq form
    ``?password=secret`` -> ``?password=***``, and the values of ``PGPASSWORD`` and MLflow's
    password/token variables when they are set."""
    text = _CREDENTIALS.sub(r"\g<scheme>\g<user>:***@", text)
    text = _KEY_VALUE.sub(r"\g<key>\g<eq>***", text)
    for name in SECRET_ENV:
        secret = os.environ.get(name, "")
        if len(secret) >= 4:  # a one-letter value would mask unrelated text
            text = text.replace(secret, "***")
    return text


def masked(value: Any) -> Any:
    """``value`` (a string, or dicts, lists and tuples of them) with every credential masked."""
    if isinstance(value, str):
        return mask_credentials(value)
    if isinstance(value, dict):
        return {k: masked(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(masked(v) for v in value)
    return value


class MaskingFilter(logging.Filter):
    """Masks credentials in every log record a handler writes (console, log files): a storage
    URL or tracking URI can reach a message from any library (Optuna, SQLAlchemy, MLflow)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask_credentials(message)
        if masked != message:
            record.msg, record.args = masked, ()
        return True


def mask_logs() -> None:
    """Put a :class:`MaskingFilter` on every handler of the root logger (once)."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, MaskingFilter) for f in handler.filters):
            handler.addFilter(MaskingFilter())
