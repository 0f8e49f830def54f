"""``python -m direct2event params <key>``: a dataset's effective parameters as YAML (its
``conf/base/parameters_<key>.yml`` over the defaults, validated)."""

from __future__ import annotations

import argparse
import warnings

import yaml
from kedro.config import OmegaConfigLoader

from direct2event.glue.params import DATASET_KEYS, ParameterError, load_settings


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m direct2event params",
        description="Print a dataset's effective parameters as YAML.",
    )
    parser.add_argument("key", choices=DATASET_KEYS, help="dataset key")
    parser.add_argument("--conf", default="conf", help="the project's conf folder")
    args = parser.parse_args(argv)
    with warnings.catch_warnings():  # Kedro's own use of a deprecated OmegaConf call
        warnings.simplefilter("ignore", UserWarning)
        loader = OmegaConfigLoader(args.conf, base_env="base", default_run_env="local")
        conf = loader["parameters"]
    try:
        params = load_settings(args.key, conf.get(args.key), conf.get("energy_profiles", {}))
    except ParameterError as err:
        raise SystemExit(str(err)) from None
    print(yaml.safe_dump(params.model_dump(exclude={"energy_profiles"}), sort_keys=False))
    return 0
