"""Cost accounting: what the recorded model calls cost, what routing saved, and the cost report.

Modules:

- ``analysis``: ``analyze_costs`` over the store's ``llm_calls`` and JSONL call logs, against all-Sonnet.
- ``report``: the cost report's data (``notebooks/cost_report.ipynb``, the twin's cost panel).
- ``views``: the cost report's plotly figures.
"""
