"""Small pieces of the transfer nodes."""

from __future__ import annotations

from direct2event.pipelines.transfer.nodes import _drop_dominated


def test_only_pareto_optimal_trial_networks_are_kept() -> None:
    trained = {
        0.5: ({}, [], (0.986, 0.0083)),
        1.5: ({}, [], (0.9835, 0.0069)),
        3.0: ({}, [], (0.980, 0.0070)),  # beaten by 1.5 on both
        5.0: ({}, [], (0.981, 0.0059)),
        6.0: ({}, [], (0.981, 0.0059)),  # a tie is kept: either may be chosen
    }
    _drop_dominated(trained)
    assert sorted(trained) == [0.5, 1.5, 5.0, 6.0]
