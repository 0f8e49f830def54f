"""Online threshold adaptation of E at inference (label-free, gradient-free), its methods, and
the stream test. A new method is one module with one :class:`AdaptationMethod` subclass,
decorated with :func:`register` and imported here."""

# isort: off
# registered in this order: the order the stage runs them by default
from direct2event.snn.adaptation import modulation
from direct2event.snn.adaptation import homeostasis
from direct2event.snn.adaptation import budgeted

# isort: on
from direct2event.snn.adaptation.core import (
    METHODS,
    AdaptationConfig,
    AdaptationMethod,
    LayerReference,
    OnlineAdaptation,
    frozen,
    input_statistics,
    reference_statistics,
    register,
)
from direct2event.snn.adaptation.stream import (
    StreamConfig,
    plateau,
    recovery_samples,
    settle_tolerance,
    sliding_accuracy,
    stream,
    stream_test,
)

ADAPTATION_METHODS: tuple[str, ...] = tuple(METHODS)  # the built-in ones, in this order

__all__ = [
    "ADAPTATION_METHODS",
    "METHODS",
    "AdaptationConfig",
    "AdaptationMethod",
    "LayerReference",
    "OnlineAdaptation",
    "StreamConfig",
    "budgeted",
    "frozen",
    "homeostasis",
    "input_statistics",
    "modulation",
    "plateau",
    "recovery_samples",
    "reference_statistics",
    "register",
    "settle_tolerance",
    "sliding_accuracy",
    "stream",
    "stream_test",
]
