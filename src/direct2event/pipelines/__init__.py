"""Kedro pipelines."""
