"""Benchmarks, one module each; see ``fibreflow.bench``."""
