"""The twin's figures: one plotly.js for the page, and updates that cost the kernel a string.

Served by ``fibreflow twin`` (Voila), a figure is a ``LiveFigure``: a small anywidget whose
state is the figure's JSON text and whose front end draws it with ``Plotly.react`` from the
plotly.js that ``prepare_assets`` puts on Voila's labextensions path (``FIBREFLOW_TWIN_PLOTLY_URL``
names it; the browser fetches it once for the page). Ten dashboards each re-rendering after
every write made plotly's ``FigureWidget`` the bottleneck: validating every update in the kernel
(~0.1 s a figure) and a ``Plotly.update`` per message in each page. Here a kernel only sets a
string, which ``Panel.show`` builds once per host (``fibreflow.twin.shared``), and the page
diffs it with ``Plotly.react``, coalescing bursts into one draw. The front end redraws a figure
when its container is first shown or resized: plotly sizes a figure to its container when
drawn, and one drawn inside a hidden tab would otherwise keep plotly's 700 px default.

Outside ``fibreflow twin`` (JupyterLab, papermill) figures are plain ``go.FigureWidget``s,
updated in place (``sync_figure``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

ASSET_ENV = "FIBREFLOW_TWIN_PLOTLY_URL"
ASSET_DIR_NAME = "fibreflow-twin"
ASSET_URL = f"voila/labextensions/{ASSET_DIR_NAME}/plotly.min.js"
_BUNDLE = "plotly.min.js"

_ESM = """
const cfg = JSON.parse(document.getElementById("jupyter-config-data")?.textContent || "{}");
const url = new URL((cfg.baseUrl || "/") + "__URL__", window.location.href).href;
function plotly() {
  if (window.Plotly) return Promise.resolve(window.Plotly);
  if (!window.__fibreflowPlotly) {
    window.__fibreflowPlotly = new Promise((resolve, reject) => {
      const script = document.createElement("script");
      const amd = window.define;  // with an AMD loader on the page plotly.js would register there
      window.define = undefined;
      const done = () => { window.define = amd; };
      script.src = url;
      script.onload = () => { done(); resolve(window.Plotly); };
      script.onerror = () => { done(); reject(new Error("could not load plotly.js from " + url)); };
      document.head.appendChild(script);
    });
  }
  return window.__fibreflowPlotly;
}
export default {
  render({ model, el }) {
    el.style.width = "100%";
    let busy = false, dirty = true, width = 0, gone = false, Plotly = null;
    const draw = async () => {  // one draw at a time; a burst of changes ends in one more draw
      if (busy || gone || !Plotly) { dirty = true; return; }
      busy = true;
      try {
        while (dirty && !gone) {
          dirty = false;
          const fig = JSON.parse(model.get("spec"));
          await Plotly.react(el, fig.data || [], fig.layout || {}, { displaylogo: false });
        }
      } finally { busy = false; }
    };
    const changed = () => { dirty = true; draw(); };
    const resized = new ResizeObserver(() => {
      const w = el.offsetWidth;
      if (w > 0 && w !== width && Plotly && el._fullLayout) { width = w; Plotly.Plots.resize(el); }
    });
    model.on("change:spec", changed);
    plotly().then((P) => { Plotly = P; width = el.offsetWidth; resized.observe(el); return draw(); })
      .catch((err) => { el.textContent = String(err); });
    return () => { gone = true; resized.disconnect(); model.off("change:spec", changed); if (Plotly) Plotly.purge(el); };
  },
};
"""

_classes: dict[str, type] = {}


def widget_class() -> type:
    """``LiveFigure`` when ``fibreflow twin`` serves the app (``FIBREFLOW_TWIN_PLOTLY_URL`` set),
    else plotly's ``go.FigureWidget``."""
    import plotly.graph_objects as go

    url = os.environ.get(ASSET_ENV)
    if not url:
        return go.FigureWidget
    if url not in _classes:
        import anywidget
        import traitlets

        _classes[url] = type("LiveFigure", (anywidget.AnyWidget,), {
            "_esm": traitlets.Unicode(_ESM.replace("__URL__", url)).tag(sync=True),
            "spec": traitlets.Unicode("{}", help="the figure's JSON (data and layout)").tag(sync=True),
            "__doc__": "A plotly figure drawn in the page from its JSON text (see the module docstring)."})
    return _classes[url]


def figure_widget(fig: Any) -> Any:
    """A new figure widget showing ``fig`` (a ``go.Figure``)."""
    cls = widget_class()
    return cls(spec=figure_spec(fig)) if is_live(cls) else cls(fig)


def is_live(widget: Any) -> bool:
    """True for a ``LiveFigure`` (or its class): shown from JSON text, not a ``FigureWidget``."""
    return hasattr(widget, "spec")


def figure_spec(fig: Any) -> str:
    """A figure's JSON text: what a ``LiveFigure`` draws, and what tells two figures apart."""
    from plotly.utils import PlotlyJSONEncoder

    return json.dumps(fig.to_plotly_json(), cls=PlotlyJSONEncoder)


def sync_figure(widget: Any, fig: Any) -> None:
    """Make the ``go.FigureWidget`` ``widget`` show ``fig`` in place: traces updated (or replaced
    when their kinds differ), layout keys set, stale layout keys cleared; one message batch."""
    traces = [t.to_plotly_json() for t in fig.data]  # per trace: arrays stay arrays (not base64)
    with widget.batch_update():
        if [t.type for t in widget.data] == [t.get("type", "scatter") for t in traces]:
            for trace, new in zip(widget.data, traces, strict=True):
                new.pop("type", None)
                new.pop("uid", None)
                stale = set(trace.to_plotly_json()) - set(new) - {"type", "uid"}
                trace.update({**dict.fromkeys(stale), **new}, overwrite=True)
        else:
            widget.data = ()
            widget.add_traces(traces)
        layout = fig.layout.to_plotly_json()
        if "template" in layout and layout["template"] == widget.layout.template.to_plotly_json():
            del layout["template"]  # validating a template again costs ~10 ms per figure
        stale = set(widget.layout.to_plotly_json()) - set(layout) - {"template"}
        widget.layout.update({**dict.fromkeys(stale), **layout}, overwrite=True)
    # The update went to connected views as deltas; the full state is what a view made later
    # starts from (a reload reconnects), and plotly refreshes it only when a figure is displayed
    # on its own, not inside a container. The state traits point at the figure's own data:
    # assigning the same objects again sends nothing, so an update costs its deltas only.
    widget._widget_data = widget._data
    widget._widget_layout = widget._layout_obj._props


def prepare_assets(directory: str | Path) -> Path:
    """Copy plotly.js to ``directory/fibreflow-twin/`` for Voila's
    ``extra_labextensions_path`` (a copy: Voila refuses symlinks out of the directory);
    returns ``directory``."""
    import shutil

    import plotly

    bundle = Path(plotly.__file__).parent / "package_data" / _BUNDLE
    target = Path(directory) / ASSET_DIR_NAME / _BUNDLE
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.exists() or target.stat().st_size != bundle.stat().st_size \
            or target.stat().st_mtime < bundle.stat().st_mtime:
        tmp = target.with_suffix(".tmp")
        shutil.copyfile(bundle, tmp)
        tmp.replace(target)
    return Path(directory)
