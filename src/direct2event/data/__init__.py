"""Data sources, loaders and splits."""
