"""Reports: parameterised notebooks run through papermill, rendered to offline HTML, and the
plotly helpers every view module shares. Depends on the foundations only.

Modules:

- ``runner``: ``run_report`` and ``REPORTS``: a notebook and parameters -> ``reports/NAME/STAMP.{ipynb,html}``.
- ``kernels``: the Jupyter kernel of this interpreter and a wall-clock watchdog.
- ``rendering``: the notebook renderer and ``export_html`` (no CDN scripts).
- ``figures``: ``empty_figure`` and readable time axes, shared by the report views.
- ``tables``: ``people_table`` and the ``format_*`` helpers: %, $ with cents, error budgets in words.
"""
