"""Stage 2: network D, trained with direct (analog) input or taken from the model registry."""
