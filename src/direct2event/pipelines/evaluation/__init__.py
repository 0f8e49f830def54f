"""Stages 6-8: event evaluation, energy estimation and the ablation."""
