"""Stage 1: dataset preparation (event binning, seeded splits)."""
