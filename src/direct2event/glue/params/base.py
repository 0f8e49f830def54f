"""What every parameter model shares: strict (an unknown key is an error) and frozen."""

from __future__ import annotations

from dataclasses import MISSING, fields
from typing import Any

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def default_of(owner: type, name: str) -> Any:
    """The default a library dataclass gives its field ``name``: the one home of a default the
    parameter models share with the library (``Field(default_of(EarlyStop, "slack"))``)."""
    for f in fields(owner):
        if f.name == name:
            if f.default is not MISSING:
                return f.default
            if f.default_factory is not MISSING:
                return f.default_factory()
            raise ValueError(f"{owner.__name__}.{name} has no default")
    raise AttributeError(f"{owner.__name__} has no field {name}")
