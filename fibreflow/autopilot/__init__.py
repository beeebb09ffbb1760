"""The autopilot: a goal becomes a tested branch on staging that an engineer approves or rejects.

``run_autopilot(goal, AutopilotOptions(...))`` decomposes the goal into features (a model call
with a schema, or a given feature list), runs N sandboxed attempts per feature with the
knowledge base in the loop, selects each winner (best of N, behavioural consensus, coverage
floor), commits it on a new branch ``fibreflow/<run>/<feature>`` without touching the working
tree, runs the repository's whole test suite on the combined winners, passes the SLA gate,
deploys to staging, runs the smoke checks, asks for approval on Slack (with Approve and Reject
buttons) and waits; with ``no_deploy`` it ends ``committed`` after the test suite.
``approve_run`` deploys to production, ``reject_run`` records why not, ``resume_autopilot``
continues a run after a crash or a failed step. Every step is a row in ``autopilot_steps``.

Modules: ``pipeline`` (the sequence), ``options`` (``AutopilotOptions``, stored with each run
so ``--resume`` builds it the same way), ``state`` (DuckDB rows), ``decompose``, ``build``,
``winner`` (selection), ``gitrepo`` (plumbing), ``suite`` (the whole test suite on the combined
winners), ``deploy`` and ``stages`` (gate, commands, smoke), ``notify`` (Block Kit),
``decisions`` (approve, reject), ``approvals`` (the Slack buttons' endpoint), ``result``
(summary), ``report`` (the build report notebook's data).
"""

from __future__ import annotations

from fibreflow.autopilot.decisions import approve_run, reject_run
from fibreflow.autopilot.options import AutopilotOptions
from fibreflow.autopilot.pipeline import resume_autopilot, run_autopilot
from fibreflow.autopilot.result import AutopilotResult, load_result, run_summary

__all__ = ["AutopilotOptions", "AutopilotResult", "approve_run", "load_result", "reject_run", "resume_autopilot",
           "run_autopilot", "run_summary"]
