"""Pure post-processing functions: thresholds, normalization and metrics."""
