"""Cost accounting: what the recorded model calls cost, what routing saved, and the cost report.

Modules:

- ``analysis``: ``analyze_costs`` over the store's ``llm_calls`` and JSONL call logs, against all-Sonnet.
- ``claude_code``: Claude Code session transcripts as priced calls, each response counted once.
- ``report``: the cost report's data (``notebooks/cost_report.ipynb``, the twin's cost panel).
- ``views``: the cost report's plotly figures.
"""
