"""``python -m direct2event registry``: every registered network version with its key tags."""

from __future__ import annotations

import argparse

from direct2event.glue import registry, tracking

SHOWN_TAGS = ("accuracy", "energy_nJ", "energy_model", "timesteps", "rate_lambda", "code_version")


def main(argv: list[str]) -> int:
    argparse.ArgumentParser(
        prog="python -m direct2event registry", description=__doc__.split(": ", 1)[1]
    ).parse_args(argv)
    tracking.use_configured_store()
    for row in registry.listing():
        fields = " ".join(f"{k}={row[k]}" for k in SHOWN_TAGS if k in row)
        print(f"models:/{row['name']}/{row['version']}  {fields}")
    return 0
