"""One pipeline per dataset key: the stage pipelines composed, then namespaced by the key."""

from __future__ import annotations

from kedro.pipeline import Pipeline

from direct2event.glue.params import DATASET_KEYS, SWEEP_SUFFIX
from direct2event.pipelines.conversion import pipeline as transfer
from direct2event.pipelines.data_processing import pipeline as data_processing
from direct2event.pipelines.direct_training import pipeline as direct_training
from direct2event.pipelines.evaluation import pipeline as evaluation
from direct2event.pipelines.finetuning import pipeline as finetuning
from direct2event.pipelines.reporting import pipeline as reporting
from direct2event.pipelines.shift import pipeline as shift

STAGES = (data_processing, direct_training, transfer, finetuning, evaluation, shift, reporting)


def create_dataset_pipeline() -> Pipeline:
    """prep -> D -> calibration -> thresholds -> lambda sweep -> fine-tuning -> evaluation ->
    ablation -> shift benchmark -> report and registry, for one dataset (inputs ``raw_data`` and ``settings``)."""
    # Each stage is a namespace of its own (kedro-viz draws it as a group); the datasets keep
    # their names, so the stages connect.
    return sum(
        (
            Pipeline(
                stage.create_pipeline(),
                namespace=stage.__name__.split(".")[-2],
                prefix_datasets_with_namespace=False,
            )
            for stage in STAGES
        ),
        Pipeline([]),
    )


def register_pipelines() -> dict[str, Pipeline]:
    """``kedro run --pipelines <key>`` runs one dataset; ``kedro run`` alone runs ``mnist``;
    ``<key>.sweep`` is a sweep worker: everything up to and including the lambda sweep (with
    ``source_model`` naming a registered D, D is loaded, not trained), nothing after it."""
    template = create_dataset_pipeline()
    pipelines = {key: Pipeline(template, namespace=key) for key in DATASET_KEYS}
    for key in DATASET_KEYS:
        pipelines[key + SWEEP_SUFFIX] = pipelines[key].to_nodes(
            f"{key}.finetuning.tune_rate_lambda"
        )
    pipelines["__default__"] = pipelines["mnist"]
    return pipelines
