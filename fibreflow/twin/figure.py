"""Plotly ``FigureWidget``s that load plotly.js once, and in-place updates of them.

A ``FigureWidget`` is an anywidget whose ``_esm`` trait carries plotly's whole 5 MB widget
bundle, so every figure ships it again through the kernel, the Voila server and the browser
(twelve figures: ~60 MB, 6 s in the kernel and 15 s to the first plot here). When
``fibreflow twin`` serves the app it puts the bundle on Voila's labextensions path and sets
``FIBREFLOW_TWIN_PLOTLY_URL``; figures then carry a 1 kB module that imports the bundle from
that URL, which the browser fetches once. The module answers anywidget at once and hands each
model to plotly when the bundle has loaded: anywidget gives a model two seconds to initialize,
and evaluating plotly.js on a busy machine takes longer (the model then failed and its figure
stopped following the kernel). The module also redraws a figure when its container
is resized or first shown: plotly sizes a figure to its container when drawn, and one drawn
inside a hidden tab would otherwise keep plotly's 700 px default. And it stops each view from
sending plotly.js's computed defaults back to the kernel after every draw: nothing here reads
them, and with many viewers each draw cost a diff in the browser and a message to handle in
the kernel.

Outside ``fibreflow twin`` (JupyterLab, papermill) figures are plain ``FigureWidget``s.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

ASSET_ENV = "FIBREFLOW_TWIN_PLOTLY_URL"
ASSET_DIR_NAME = "fibreflow-twin"
ASSET_URL = f"voila/labextensions/{ASSET_DIR_NAME}/widgetbundle.js"

_LOADER = """
const cfg = JSON.parse(document.getElementById("jupyter-config-data")?.textContent || "{}");
const url = new URL((cfg.baseUrl || "/") + "__URL__", window.location.href).href;
const bundle = import(url).then((mod) => {
  const proto = mod.FigureView.prototype;
  if (!proto.__fibreflowResize) {
    proto.__fibreflowResize = true;
    const perform = proto.perform_render;
    proto.perform_render = function (...args) {
      const out = perform.apply(this, args);
      let width = 0;
      new ResizeObserver(() => {
        const w = this.el.offsetWidth;
        if (w > 0 && w !== width) { width = w; this.autosizeFigure(); }
      }).observe(this.el);
      return out;
    };
    proto._sendTraceDeltas = proto._sendLayoutDelta = function () {};
  }
  return mod;
});
export default () => {
  let ready;
  return {
    initialize(ctx) {
      ready = bundle.then((mod) => { const widget = mod.default(); widget.initialize(ctx); return widget; });
    },
    async render(ctx) { return (await ready).render(ctx); },
  };
};
"""

_classes: dict[str, type] = {}


def widget_class() -> type:
    """``go.FigureWidget``, or its shared-bundle subclass when ``fibreflow twin`` serves the app."""
    import plotly.graph_objects as go

    url = os.environ.get(ASSET_ENV)
    if not url:
        return go.FigureWidget
    if url not in _classes:
        _classes[url] = type("TwinFigureWidget", (go.FigureWidget,), {"_esm": _LOADER.replace("__URL__", url)})
    return _classes[url]


def figure_widget(fig: Any = None) -> Any:
    """A new figure widget, showing ``fig`` (a ``go.Figure``) if given."""
    return widget_class()(fig)


def signature(fig: Any) -> str:
    """A stable text of a figure's data and layout, to tell whether an update changes anything."""
    from plotly.utils import PlotlyJSONEncoder

    return json.dumps(fig.to_plotly_json(), cls=PlotlyJSONEncoder, sort_keys=True)


def sync_figure(widget: Any, fig: Any) -> None:
    """Make ``widget`` show ``fig`` in place: traces updated (or replaced when their kinds
    differ), layout keys set, stale layout keys cleared; one message batch to the browser."""
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
    # starts from (Voila's page connects after the kernel ran, a reload reconnects), and plotly
    # refreshes it only when a figure is displayed on its own, not inside a container. The state
    # traits point at the figure's own data: assigning the same objects again sends nothing, so
    # an update costs its deltas only (a copy, unequal to the last, resent the whole figure to
    # every connected view and took ~0.1 s per figure to make), and a view made later still
    # gets the current data.
    widget._widget_data = widget._data
    widget._widget_layout = widget._layout_obj._props


def prepare_assets(directory: str | Path) -> Path:
    """Copy plotly's widget bundle to ``directory/fibreflow-twin/`` for Voila's
    ``extra_labextensions_path`` (a copy: Voila refuses symlinks out of the directory);
    returns ``directory``."""
    import shutil

    import plotly

    bundle = Path(plotly.__file__).parent / "package_data" / "widgetbundle.js"
    target = Path(directory) / ASSET_DIR_NAME / "widgetbundle.js"
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.exists() or target.stat().st_size != bundle.stat().st_size \
            or target.stat().st_mtime < bundle.stat().st_mtime:
        tmp = target.with_suffix(".tmp")
        shutil.copyfile(bundle, tmp)
        tmp.replace(target)
    return Path(directory)
