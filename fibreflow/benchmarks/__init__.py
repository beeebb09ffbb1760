"""Benchmarks, one module each; see ``fibreflow.cli.bench``."""
