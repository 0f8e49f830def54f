"""The pretrained-SNN database: networks D and E in the MLflow Model Registry.

Each dataset's run registers ``<key>-direct`` (network D) and ``<key>-event`` (network E) as
``mlflow.pytorch`` models, tagged with what a user picks a model by (accuracy, energy, timesteps,
lambda, architecture, code version). A run can start from a registered network D
(``source_model``) and then skips training.
"""

from __future__ import annotations

import logging
import re
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import mlflow
import mlflow.pyfunc
import mlflow.pytorch
import numpy as np
import torch
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.tracking import MlflowClient
from mlflow.types import Schema, TensorSpec

from direct2event import __version__
from direct2event.glue import runs
from direct2event.glue.params import ModelParams
from direct2event.glue.serving import PACKAGE_DIR, ServedNetwork
from direct2event.snn.encoders import InputCoding
from direct2event.snn.models import SpikingNet, checkpoint
from direct2event.snn.nir_io import NIRError, from_nir, save_nir

logger = logging.getLogger(__name__)

ARCHITECTURE_TAGS = ("arch", "channels", "hidden", "pooling", "beta", "surrogate_width", "reset")
_UNTAGGED = {"pooling": "max"}  # versions registered before the tag existed


class RegistryError(ValueError):
    """A registered model that does not exist or does not fit the configured network."""


def model_name(dataset: str, kind: str) -> str:
    """``<key>-direct`` or ``<key>-event``."""
    return f"{dataset}-{kind}"


def _git(*args: str) -> str:
    root = Path(__file__).resolve().parents[2]
    return subprocess.run(  # noqa: S603 (only the fixed git calls below)
        ["git", *args],  # noqa: S607 (git from PATH)
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
        timeout=10,
    ).stdout.strip()


def code_version() -> str:
    """The git commit of the project (``+dirty`` when it has local changes), else the version."""
    try:
        dirty = _git("status", "--porcelain", "--untracked-files=no")
        return _git("rev-parse", "--short", "HEAD") + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return __version__


def architecture_tags(model: ModelParams) -> dict[str, str]:
    """The configured architecture as registry tags (compared when a model is reused)."""
    return {
        "arch": model.arch,
        "channels": str(list(model.channels) if model.channels is not None else None),
        "hidden": str(model.hidden),
        "pooling": model.pooling,
        "beta": str(model.beta),
        "surrogate_width": str(model.surrogate_width),
        "reset": model.reset,
        "timesteps": str(model.timesteps),
    }


def _latest(client: MlflowClient, name: str) -> str:
    versions = complete_versions(client, name)
    if not versions:
        raise RegistryError(
            f"No registered model '{name}'. Run the pipeline once to register it, or list the "
            "database with: python -m direct2event registry"
        )
    return str(max(int(v.version) for v in versions))


def resolve(source: str, dataset: str) -> tuple[str, str]:
    """``(name, version)`` of ``models:/<name>/<version>``, ``models:/<name>/latest`` or
    ``latest`` (the newest ``<dataset>-direct``)."""
    client = MlflowClient()
    if source == "latest":
        name = model_name(dataset, "direct")
        return name, _latest(client, name)
    match = re.fullmatch(r"models:/([^/]+)/(\d+|latest)", source)
    if match is None:
        raise RegistryError(
            f"source_model '{source}' is not a registry URI; use models:/{dataset}-direct/<version>, "
            f"models:/{dataset}-direct/latest or latest."
        )
    name, version = match.groups()
    return name, _latest(client, name) if version == "latest" else version


def is_registry_uri(source: str | None) -> bool:
    """Whether ``source_model`` names a registered network (not a NIR file, not None)."""
    return source is not None and not source.startswith(NIR_PREFIX)


NIR_PREFIX = "nir:"


def check_source(source: str, dataset: str, model: ModelParams) -> str:
    """The resolved ``models:/<name>/<version>`` of ``source``, after checking that it exists
    and was registered with the configured architecture (before any training starts). A
    ``nir:<path>`` source is checked by reading it (its nodes must be supported)."""
    if source.startswith(NIR_PREFIX):
        load_nir(source, model)
        return source
    name, version = resolve(source, dataset)
    try:
        registered = MlflowClient().get_model_version(name, version)
    except MlflowException:
        raise RegistryError(
            f"Registered model '{name}' has no version {version}. List the database with: "
            "python -m direct2event registry"
        ) from None
    wanted = architecture_tags(model)
    differ = {
        k: (registered.tags.get(k, _UNTAGGED.get(k)), wanted[k])
        for k in (*ARCHITECTURE_TAGS, "timesteps")
        if registered.tags.get(k, _UNTAGGED.get(k)) != wanted[k]
    }
    if differ:
        detail = ", ".join(f"{k}: registered {a}, configured {b}" for k, (a, b) in differ.items())
        raise RegistryError(
            f"models:/{name}/{version} has another architecture than {dataset}.model ({detail}). "
            "Configure the same model or pick another version."
        )
    return f"models:/{name}/{version}"


CHAMPION = "champion"


def signature(net: SpikingNet, coding: InputCoding) -> ModelSignature:
    """What the served network gives: class probabilities ``[batch, classes]``. Its input is
    left out of the signature: MLflow's schema check refuses a float64 or uint8 array with a
    dump of the whole array, while the model checks and converts its input itself, naming the
    layout it expects (:meth:`direct2event.glue.serving.ServedNetwork.inputs`); the layout is
    in the version's metadata (``input_shape``, ``input_encoding``, ``timesteps``)."""
    return ModelSignature(
        inputs=None,
        outputs=Schema(
            [TensorSpec(np.dtype(np.float32), (-1, net.config["classes"]), "probabilities")]
        ),
    )


def example_input(net: SpikingNet, coding: InputCoding) -> np.ndarray:
    """Two blank inputs in the served layout (shown with the model in the MLflow UI)."""
    shape = tuple(net.config["input_shape"])
    bins = (coding.timesteps,) if coding.encoding == "frames" else ()
    return np.zeros((2, *bins, *shape), np.float32)


COMPLETE_TAG = "registered_by"  # written with the version in one transaction: never partial
ELIGIBLE_TAG = "champion_eligible"
WHY_NOT_TAG = "not_champion_because"
NO_CHAMPION_TAG = "no_champion_because"  # on the registered model while no version qualifies


def _ensure_registered_model(client: MlflowClient, name: str, description: str) -> None:
    """The registered model, with its model-level description (set again when it changed)."""
    try:
        client.create_registered_model(name, description=description)
        return
    except MlflowException as err:
        if err.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
            raise
    if client.get_registered_model(name).description != description:
        client.update_registered_model(name, description=description)


def register(
    net: SpikingNet,
    dataset: str,
    kind: str,
    tags: dict[str, Any],
    coding: InputCoding,
    seed: int,
    description: str = "",
    nir_graph: Any = None,
) -> str:
    """Log ``net`` to the active run (its only copy in MLflow) as a servable pyfunc model
    (:class:`direct2event.glue.serving.ServedNetwork`: raw inputs in, class probabilities out,
    encoded with ``coding`` and ``seed``; this package as its code) and register it as
    ``<dataset>-<kind>`` with its signature, tags and description, and its NIR graph as the
    model's artifact ``<name>.nir`` when given; returns its URI.

    The version is created with all its tags and its description in one database transaction
    (MLflow's ``log_model(registered_model_name=...)`` would create it bare and tag it after,
    so a stop in between left versions with 3 of 21 tags), inside a section no SIGTERM cuts."""
    name = model_name(dataset, kind)
    served = ServedNetwork(coding, net.config["input_shape"], net.config["classes"], seed)
    with tempfile.TemporaryDirectory() as tmp:
        artifacts = {"network": str(Path(tmp) / "network.pt")}
        torch.save(checkpoint(net.cpu().eval()), artifacts["network"])
        if nir_graph is not None:
            import nir

            artifacts["nir"] = str(Path(tmp) / f"{name}.nir")
            nir.write(artifacts["nir"], nir_graph)
        info = mlflow.pyfunc.log_model(
            name=f"{dataset}_{kind}_network",
            python_model=served,
            artifacts=artifacts,
            code_paths=[str(PACKAGE_DIR)],
            signature=signature(net, coding),
            input_example=example_input(net, coding),
            pip_requirements=[
                f"torch=={torch.__version__.split('+')[0]}",
                f"numpy=={np.__version__}",
                f"mlflow=={mlflow.__version__}",
            ],
            metadata={
                "input_encoding": coding.encoding,
                "timesteps": coding.timesteps,
                "input_shape": list(net.config["input_shape"]),
                "classes": int(net.config["classes"]),
                "seed": seed,
            },
        )
    client = MlflowClient()
    run = mlflow.active_run()
    with runs.uninterrupted():
        model_text = MODEL_DESCRIPTIONS[kind].format(dataset=dataset, name=name)
        _ensure_registered_model(client, name, model_text)
        version = client.create_model_version(
            name,
            source=info.model_uri,
            run_id=run.info.run_id if run is not None else None,
            tags={**{k: str(v) for k, v in tags.items()}, COMPLETE_TAG: "direct2event"},
            description=description or None,
            model_id=info.model_id,
        ).version
    logger.info("Registered %s version %s", name, version)
    return f"models:/{name}/{version}"


def complete_versions(client: MlflowClient, name: str) -> list[Any]:
    """The versions of ``name`` registered whole (all tags written with the version); versions
    left bare by a process killed inside MLflow's older two-step registration are skipped with
    a warning that names them."""
    versions = client.search_model_versions(f"name = '{name}'")
    whole = [v for v in versions if COMPLETE_TAG in v.tags or "arch" in v.tags]
    partial = sorted(int(v.version) for v in versions if v not in whole)
    if partial:
        logger.warning(
            "%s versions %s were registered only in part (the process stopped during "
            "registration): never used as latest or champion",
            name,
            partial,
        )
    return whole


def energy_nj(tags: dict[str, str]) -> float:
    """A version's energy per sample in nJ (versions registered before nJ carry ``energy_uJ``)."""
    if "energy_nJ" in tags:
        return float(tags["energy_nJ"])
    return 1000.0 * float(tags.get("energy_uJ", "inf"))


MODEL_DESCRIPTIONS = {
    "direct": (
        "Network D of {dataset}: direct (analog) input coding, graded surrogate activations; "
        "the source every network E of this dataset is transferred from. Alias champion: the "
        "most accurate eligible version. Serve: mlflow.pyfunc.load_model('models:/{name}@"
        "champion').predict(inputs) gives class probabilities."
    ),
    "event": (
        "Network E of {dataset}: event-driven (binary spikes), transferred from network D and "
        "fine-tuned with a spike-rate penalty. Each version's tags give its test accuracy, "
        "accuracy retention of D, energy per sample (nJ, energy_model) and energy reduction. "
        "Alias champion: the lowest-energy version whose test retention reaches its run's "
        "tuning.retention_floor (a version tagged champion_eligible=false says why not). Serve: "
        "mlflow.pyfunc.load_model('models:/{name}@champion').predict(inputs) gives class "
        "probabilities; export: python -m direct2event export-nir."
    ),
}


def crown_champion(name: str, floor: float | None) -> str | None:
    """Point the ``champion`` alias of ``name`` at its best version: for E, the lowest energy
    among versions whose test accuracy retention reaches ``floor``; for D (``floor`` None),
    the most accurate. A version tagged ``champion_eligible=false`` (its run missed its own
    target) is never chosen. Returns the version (None when no version qualifies)."""
    client = MlflowClient()
    whole = complete_versions(client, name)
    versions = [v for v in whole if v.tags.get(ELIGIBLE_TAG, "true") == "true"]
    if floor is None:
        candidates = [v for v in versions if "accuracy" in v.tags]
        best = max(
            candidates, key=lambda v: (float(v.tags["accuracy"]), -int(v.version)), default=None
        )
    else:
        candidates = [v for v in versions if float(v.tags.get("accuracy_retention", "0")) >= floor]
        best = min(candidates, key=lambda v: (energy_nj(v.tags), int(v.version)), default=None)
    if best is None:  # the registered model says why it has no champion
        rule = "the most accurate" if floor is None else f"test retention >= {floor}"
        client.set_registered_model_tag(
            name,
            NO_CHAMPION_TAG,
            f"no version is eligible ({rule}, not tagged {ELIGIBLE_TAG}=false): "
            f"{len(versions)} of {len(whole)} versions are eligible, "
            f"{len(candidates)} pass the rule",
        )
        return None
    with runs.uninterrupted():
        client.set_registered_model_alias(name, CHAMPION, best.version)
        if NO_CHAMPION_TAG in client.get_registered_model(name).tags:
            client.delete_registered_model_tag(name, NO_CHAMPION_TAG)
    return str(best.version)


def _model_files(uri: str) -> str:
    """Where a registered version's files lie, for an error message."""
    try:
        return str(mlflow.artifacts.download_artifacts(uri))  # a local store: its own folder
    except Exception as err:
        return f"(not listed: {err})"


def load_nir(source: str, model: ModelParams) -> SpikingNet:
    """Network D from ``nir:<path>`` (a graph written by this project or another framework).
    Its neurons stay what the graph says: graded for a D this project exported
    (``neuron_output: graded``), spiking for a network from another framework (snnTorch,
    sinabs, Norse: its accuracy here is its own). The neurons' reset, when the graph does not
    say, and the surrogate width come from ``model``."""
    path = Path(source.removeprefix(NIR_PREFIX))
    if not path.is_file():
        raise RegistryError(
            f"source_model {source}: no file {path}; give nir:<path to a .nir file>"
        )
    try:
        net = from_nir(path, width=model.surrogate_width, reset_default=model.reset)
    except NIRError as err:
        raise RegistryError(f"source_model {source}: {err}") from None
    except Exception as err:  # not HDF5, not a NIR graph
        raise RegistryError(f"source_model {source} is not a readable NIR graph: {err}") from None
    return net


def load(uri: str) -> SpikingNet:
    """A registered network, on the CPU (a served pyfunc version, or a PyTorch-flavoured one
    registered before serving). A model file that cannot be read (truncated, not a pickle) is
    named with the version it belongs to."""
    try:
        flavors = mlflow.models.get_model_info(uri).flavors
        if "pytorch" in flavors:
            net = mlflow.pytorch.load_model(uri, map_location="cpu")
        else:
            net = getattr(mlflow.pyfunc.load_model(uri).unwrap_python_model(), "network", None)
    except MlflowException:
        raise
    except Exception as err:
        raise RegistryError(
            f"{uri} cannot be loaded: its model file is damaged or not a direct2event network "
            f"({type(err).__name__}: {err}). Model files of this version: "
            f"{_model_files(uri)}. Register it again (run the pipeline) or pick another version."
        ) from None
    if not isinstance(net, SpikingNet):
        raise RegistryError(f"{uri} holds a {type(net).__name__}, not a direct2event SpikingNet.")
    return net.eval()


def export_nir(uri: str, out: str | Path) -> Path:
    """Write the NIR graph of a registered network (``models:/<name>/<version>`` or
    ``models:/<name>@<alias>``) to ``out``, with the T and input encoding it was registered
    with."""
    match = re.fullmatch(r"models:/([^/@]+)(?:/(\d+)|@(\w+))", uri)
    if match is None:
        raise RegistryError(
            f"{uri} is not a model version; use models:/<name>/<version> or models:/<name>@champion"
        )
    name, version, alias = match.groups()
    client = MlflowClient()
    try:
        mv = (
            client.get_model_version_by_alias(name, alias)
            if alias
            else client.get_model_version(name, version)
        )
    except MlflowException:
        raise RegistryError(
            f"{uri} does not exist. List the database with: python -m direct2event registry"
        ) from None
    net = load(f"models:/{name}/{mv.version}")
    network = "E" if name.endswith("-event") else "D"
    return save_nir(net, out, int(mv.tags["timesteps"]), mv.tags["input_encoding"], network)


def listing() -> list[dict[str, Any]]:
    """Every registered version with its tags, newest first."""
    rows = []
    for version in MlflowClient().search_model_versions():
        rows.append({"name": version.name, "version": int(version.version), **version.tags})
    return sorted(rows, key=lambda r: (r["name"], -r["version"]))
