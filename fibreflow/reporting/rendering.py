"""How report notebooks look outside Jupyter: plotly output that survives nbconvert, offline HTML.

Inside a papermill kernel plotly defaults to its ``plotly_mimetype`` renderer, which nbconvert
cannot draw, and plotly's ``notebook`` renderer adds a MathJax ``<script src>`` from a CDN to
every figure. ``setup_notebook()`` (called by every report notebook) therefore registers a
renderer that emits the plotly mimetype for JupyterLab plus plain ``text/html`` with plotly.js
inlined once, and ``export_html`` uses a template without nbconvert's require.js, MathJax and
mermaid CDN scripts: the HTML report needs no network to show its figures.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

RENDERER_NAME = "fibreflow_report"

_TEMPLATE_NAME = "fibreflow_report.html.j2"
# The lab template minus the scripts it would fetch from CDNs (reports have no widgets or LaTeX).
_TEMPLATE = """{%- extends 'index.html.j2' -%}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
"""


def _renderer_class() -> type:
    from plotly.io import to_html
    from plotly.io.base_renderers import MimetypeRenderer

    class OfflineHtmlRenderer(MimetypeRenderer):
        """``text/html`` figures; the first one carries plotly.js, the rest reuse it."""

        def __init__(self) -> None:
            # a dict, not a bool: plotly renders with a shallow copy of the renderer
            self.state = {"plotlyjs_sent": False}

        def to_mimebundle(self, fig_dict: Any) -> dict[str, str]:
            html = to_html(fig_dict, full_html=False, include_plotlyjs=not self.state["plotlyjs_sent"],
                           include_mathjax=False, default_width="100%", default_height=525,
                           validate=False)
            self.state["plotlyjs_sent"] = True
            return {"text/html": html}

    return OfflineHtmlRenderer


def setup_notebook() -> None:
    """Make plotly figures in this kernel render in JupyterLab and in the exported HTML."""
    import plotly.io as pio

    pio.renderers[RENDERER_NAME] = _renderer_class()()
    pio.renderers.default = f"plotly_mimetype+{RENDERER_NAME}"


def export_html(notebook_path: str | Path, html_path: str | Path, *, title: str | None = None) -> Path:
    """Write an executed notebook as self-contained HTML without code cells or prompts."""
    import jinja2
    import nbformat
    from nbconvert import HTMLExporter

    notebook_path, html_path = Path(notebook_path), Path(html_path)
    nb = nbformat.read(notebook_path, as_version=4)
    exporter = HTMLExporter(
        extra_loaders=[jinja2.DictLoader({_TEMPLATE_NAME: _TEMPLATE})], template_file=_TEMPLATE_NAME,
        exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True)
    body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": title or notebook_path.stem}})
    html_path.write_text(body, encoding="utf-8")
    return html_path
