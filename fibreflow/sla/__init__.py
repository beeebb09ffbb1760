"""Data-freshness SLA monitoring: definitions, checks over real sources, cycles, alerts, compliance.

Modules:

- ``config``: the SLA definitions file and its schema; ``model``: check results and alert rules.
- ``sources``: readers (a SQL scalar, a JSON field over HTTP, the newest file);
  ``checks``: one function per check type.
- ``monitor``: ``SLAMonitor`` cycles, the watch loop and ``require_fresh_data``; ``health``: ``GET /health``.
- ``feature_gate``: ``FreshDataGate``, the gate before a build's agents (a feature's ``needs_data``);
  ``budget_alerts``: the budget guard's 80% and 100% alerts, through the outbox.
- ``conditions``: the safe alert-condition language; ``alerts``: rules, cooldowns, windows;
  ``messages``: alert texts; ``outbox``: the queue every notification goes through;
  ``delivery``: Slack and webhook sending.
- ``compliance``: compliance over a window; ``report`` and ``views``: the SLA report's data and figures.
- ``localdata``: a local data layer for the example SLAs (real sources on this machine).
"""
