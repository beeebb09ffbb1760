"""The digital twin: one panel class per dashboard layer, assembled by ``fibreflow.twin.app``.

Panels read the store through ``fibreflow.store`` and hold their state in ipywidgets and
plotly ``FigureWidget``s that ``refresh`` updates in place; ``fibreflow twin`` serves the
``notebooks/digital_twin.ipynb`` app with Voila. Importing this package is cheap: panels
import plotly and ipywidgets themselves.

Modules:

- ``app``: ``TwinApp``, the filters, the five panels as tabs (built when first opened) and live polling.
- ``base``: the filters, the store's change token and the ``Panel`` base class.
- ``infrastructure``: SLA status by hour, sync latency against its threshold, violations.
- ``topology``: orchestrator -> agents -> tools -> data sources; ``layout`` places its nodes.
- ``layout``: a small force-directed layout for the topology.
- ``costs``: cost by tier, agent and feature, sandbox cost, the trend.
- ``learning``: knowledge-base growth, success per iteration, top failure patterns.
- ``simulation``: what-if controls over ``fibreflow.simulation``.
- ``figure``: ``FigureWidget``s that load plotly.js once, updated in place.
- ``shared``: ``SharedReads``, store reads shared by the dashboard kernels of one host.
- ``sample_data``: a seeded history for the twin's tests and benchmark.
"""

import os as _os
import sys as _sys

# In a kernel that ``fibreflow twin`` serves: plotly's FigureWidget imports nbformat, whose
# jsonschema loads the optional IRI checker rfc3987_syntax, which builds a parser at import
# (0.9 s of the kernel's ~2 s of imports). Nothing here validates IRIs, so it stays unloaded.
if _os.environ.get("FIBREFLOW_TWIN_PLOTLY_URL"):
    _sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]  # None blocks the import (documented); typeshed only allows modules
