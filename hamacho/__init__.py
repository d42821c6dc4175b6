"""Hamacho: visual anomaly detection for industrial inspection (PaDiM, PatchCore)."""

__version__ = "0.1.0"
