"""Benchmarks behind ``fibreflow bench NAME --json``: one public module per benchmark, each with
``add_arguments(parser)`` and ``run(args) -> dict``; ``fibreflow.cli.bench`` finds and runs them.

Benchmarks: ``store``, ``sla``, ``sandbox``, ``parallel``, ``router``, ``selection``, ``learning``,
``escalation``, ``twin``, ``interrupt`` (Ctrl-C to exit of a build with 15 attempts running).

Helpers (underscored, not benchmarks): ``_humaneval`` (tasks and samples), ``_testcases`` (a
task's visible and generated tests), ``_harness`` (runs candidates against tests, stdlib only),
``_execution`` (candidates in a sandbox, with a cache), ``_candidates`` (shared by the selection
benchmarks), ``_stoprule`` (the escalation rule and its calibration), ``_learning_demo`` (the
autopilot twice on the demo repository), ``_twin_browser`` (the twin in chromium), ``_repo`` (a one-file git repository).
"""
