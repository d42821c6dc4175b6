"""What scoring runs produce: per-image results, metrics, calibration and the report's data (no rendering)."""
