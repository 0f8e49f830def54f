"""The per-dataset transfer pipeline."""
