"""Tests of fibreflow.sla (a package so test module names do not clash with tests/)."""
