"""The digital twin: one panel class per dashboard layer, assembled by ``fibreflow.twin.app``.

Panels read the store through ``fibreflow.store`` and hold their state in ipywidgets and
plotly ``FigureWidget``s that ``refresh`` updates in place; ``fibreflow twin`` serves the
``notebooks/digital_twin.ipynb`` app with Voila. Importing this package is cheap: panels
import plotly and ipywidgets themselves.
"""

import os as _os
import sys as _sys

# In a kernel that ``fibreflow twin`` serves: plotly's FigureWidget imports nbformat, whose
# jsonschema loads the optional IRI checker rfc3987_syntax, which builds a parser at import
# (0.9 s of the kernel's ~2 s of imports). Nothing here validates IRIs, so it stays unloaded.
if _os.environ.get("FIBREFLOW_TWIN_PLOTLY_URL"):
    _sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]
