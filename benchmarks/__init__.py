"""Benchmark of Hamacho against anomalib (``python benchmarks/run.py --help``; docs/benchmark.md)."""
