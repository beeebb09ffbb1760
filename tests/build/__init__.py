"""Tests of fibreflow.build (a package so test module names do not clash with tests/)."""
