"""The run's report: summary, per-epoch metrics, figures and the model registry."""
