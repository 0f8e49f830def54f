"""``python -m direct2event export-nir <model URI> <out.nir>``: a registered network's NIR graph."""

from __future__ import annotations

import argparse

from direct2event.glue import registry, tracking
from direct2event.snn.nir_io import NIRError


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m direct2event export-nir", description=__doc__.split(": ", 1)[1]
    )
    parser.add_argument("uri", help="models:/<name>/<version> or models:/<name>@champion")
    parser.add_argument("out", help="the .nir file to write")
    args = parser.parse_args(argv)
    tracking.use_configured_store()
    try:
        path = registry.export_nir(args.uri, args.out)
    except (registry.RegistryError, NIRError) as err:
        raise SystemExit(f"export-nir: {err}") from None
    print(f"wrote {path} (NIR graph of {args.uri})")
    return 0
