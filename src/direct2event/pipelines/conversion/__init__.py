"""Stages 3-4: surrogate-to-spike calibration and adaptive threshold scaling of network E."""
