"""Kedro, MLflow and Optuna around the library (docs/architecture.md)."""
