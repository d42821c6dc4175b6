"""Backbones, the AnomalyModule contract and the PaDiM and PatchCore models."""
