"""`skystream dashboard-png`: the Grafana dashboard's main panels as one PNG, without Grafana.

Runs the same PromQL as the provisioned dashboards (deploy/grafana/build_dashboards.py; a test keeps
the two in step) as range queries against any Prometheus that scrapes the stream, and draws them
with matplotlib's Agg backend: throughput, predictions by label, latency p50/p99, inference time,
consumer lag, dead letters, drift (PSI per feature, with the 0.1 and 0.25 thresholds) and the model
versions served. A header line holds the instant numbers of the dashboard's health row.
"""

from __future__ import annotations

import json
import math
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = ["Panel", "PrometheusError", "Query", "expand", "parse_duration", "render"]

PSI_MODERATE, PSI_SIGNIFICANT = 0.1, 0.25  # the dashboards' PSI thresholds
POINTS = 300  # samples per series: enough for a panel a few hundred pixels wide


@dataclass(frozen=True)
class Query:
    """One PromQL query of a panel and its legend format."""
    expr: str  # PromQL with Grafana's variables ($task, $__range), as in the dashboards
    legend: str  # Grafana legend format: {{label}} is replaced by the series' label value


@dataclass(frozen=True)
class Panel:
    """One dashboard panel: its title, queries and how to draw them."""
    title: str
    queries: tuple[Query, ...]
    unit: str = ""  # "s" (seconds, log axis), "/s" (rate), "" (a count or index)
    thresholds: tuple[tuple[float, str], ...] = ()  # horizontal lines (value, colour)
    step: bool = False  # draw as steps (levels that change at an instant, e.g. versions served)
    shade: Query | None = None  # a 0/1 series drawn as red background where it is 1
    notes: tuple[str, ...] = field(default=())


PANELS: tuple[Panel, ...] = (
    Panel("Throughput: files published and messages processed", (
        Query("source_kind:skystream_files_published:rate5m", "published {{kind}}"),
        Query("agent_outcome:skystream_messages_processed:rate5m", "{{agent}} {{outcome}}"),
    ), unit="/s"),
    Panel("Predictions by label", (
        Query('task_label:skystream_predictions:rate5m{task=~"$task"}', "{{task}} {{label}}"),
    ), unit="/s"),
    Panel("Latency p50 / p99: per stage and end to end", (
        Query("stage:skystream_stage_latency_seconds:p50_5m", "p50 {{stage}}"),
        Query("stage:skystream_stage_latency_seconds:p99_5m", "p99 {{stage}}"),
        Query("kind:skystream_end_to_end_latency_seconds:p50_5m", "p50 end to end {{kind}}"),
        Query("kind:skystream_end_to_end_latency_seconds:p99_5m", "p99 end to end {{kind}}"),
    ), unit="s"),
    Panel("Inference time per ONNX call p50 / p99", (
        Query('task:skystream_inference_seconds:p50_5m{task=~"$task"}', "p50 {{task}}"),
        Query('task:skystream_inference_seconds:p99_5m{task=~"$task"}', "p99 {{task}}"),
    ), unit="s"),
    Panel("Consumer lag per topic (messages)", (
        Query("topic:skystream_consumer_lag_messages:sum", "{{topic}}"),
    )),
    Panel("Dead letters by stage and reason", (
        Query("stage_reason:skystream_dead_letters:rate5m", "{{stage}}: {{reason}}"),
    ), unit="/s"),
    Panel("Drift: PSI per feature (red: drift detected)", (
        Query('task_feature:skystream_drift_psi:max{task=~"$task"}', "{{task}} {{feature}}"),
    ), thresholds=((PSI_MODERATE, "orange"), (PSI_SIGNIFICANT, "red")),
        shade=Query('task:skystream_drift_detected:max{task=~"$task"}', "{{task}}")),
    Panel("Model versions (workers serving each)", (
        Query("task_model_version:skystream_model_info:count", "{{task}} {{model}} v{{version}}"),
    ), step=True),
)

# The health row: instant values printed in the header.
STATS: tuple[tuple[str, str], ...] = (
    ("workers up", 'count(up{job="skystream-worker"} == 1) or vector(0)'),
    ("watcher up", 'max(up{job="skystream-watcher"}) or vector(0)'),
    ("predictions/s", "sum(task_label:skystream_predictions:rate5m) or vector(0)"),
    ("dead letters in range", "sum(increase(skystream_dead_letters_total[$__range])) or vector(0)"),
    ("firing alerts", 'count(ALERTS{alertstate="firing", alertname=~"SkyStream.*"}) or vector(0)'),
)


# -- Prometheus -----------------------------------------------------------------------------------
class PrometheusError(RuntimeError):
    """Prometheus answered with an error (e.g. a query it cannot parse) or not at all."""


def parse_duration(text: str) -> float:
    """Seconds of a Prometheus-style duration: 90s, 15m, 3h, 2d, 1w (or a plain number of seconds)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text)
    if not m:
        raise ValueError(f"not a duration: {text!r} (e.g. 90s, 15m, 3h, 2d)")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[m.group(2)]


def _duration_text(seconds: float) -> str:
    return f"{max(1, round(seconds))}s"


def expand(expr: str, task: str = ".*", range_: str = "1h") -> str:
    """Fill in the Grafana variables the panels use, as Grafana would."""
    return expr.replace("$__range", range_).replace("$task", task)


def _get(base: str, path: str, params: dict[str, str]) -> Any:
    url = f"{base.rstrip('/')}/api/v1/{path}?{urllib.parse.urlencode(params)}"
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            body = json.load(r)
    except urllib.error.HTTPError as exc:  # 400/422 carry Prometheus's reason
        body = json.load(exc)
    except urllib.error.URLError as exc:
        raise PrometheusError(f"cannot reach Prometheus at {base}: {exc.reason}") from None
    if body.get("status") != "success":
        raise PrometheusError(f"{params.get('query', path)}: {body.get('errorType')}: {body.get('error')}")
    return body["data"]


def _legend(fmt: str, metric: dict[str, str]) -> str:
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: metric.get(m.group(1), ""), fmt).strip()


def _series(base: str, query: Query, start: float, end: float, step: float, task: str,
            range_: str) -> list[tuple[str, list[float], list[float]]]:
    data = _get(base, "query_range", {"query": expand(query.expr, task, range_), "start": f"{start:.3f}",
                                      "end": f"{end:.3f}", "step": f"{step:g}"})
    out = []
    for r in data["result"]:
        ts = [float(t) for t, _ in r["values"]]
        vs = [float(v) for _, v in r["values"]]  # "NaN" and "+Inf" parse as floats
        if any(math.isfinite(v) for v in vs):
            out.append((_legend(query.legend, r["metric"]), ts, vs))
    return sorted(out, key=lambda s: s[0])


# -- drawing --------------------------------------------------------------------------------------
def render(prometheus: str, output: Path, range_seconds: float = 3600.0, end: float | None = None,
           task: str = ".*") -> dict[str, int]:
    """Draw every panel of PANELS into ``output`` (PNG); returns the number of series drawn per panel."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    end = time.time() if end is None else end
    start = end - range_seconds
    step = max(1.0, math.ceil(range_seconds / POINTS))
    range_text = _duration_text(range_seconds)

    fig = Figure(figsize=(17, 15), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    stamp = datetime.fromtimestamp(end, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    stats = []
    for label, expr in STATS:
        result = _get(prometheus, "query", {"query": expand(expr, task, range_text), "time": f"{end:.3f}"})["result"]
        value = float(result[0]["value"][1]) if result else math.nan
        stats.append(f"{label} {_fmt(value, '/s' if '/s' in label else '')}")
    fig.suptitle(f"SkyStream — {prometheus} — last {_human(range_seconds)} to {stamp}\n" + "   ·   ".join(stats),
                 fontsize=13, fontweight="bold")
    axes = fig.subplots(math.ceil(len(PANELS) / 2), 2, squeeze=False).ravel()
    summary: dict[str, int] = {}
    for ax, panel in zip(axes, PANELS, strict=False):
        series = [s for q in panel.queries for s in _series(prometheus, q, start, end, step, task, range_text)]
        shade = _series(prometheus, panel.shade, start, end, step, task, range_text) if panel.shade else []
        _draw(ax, panel, series, shade, start, end)
        summary[panel.title] = len(series)
    for ax in axes[len(PANELS):]:
        ax.set_visible(False)
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, format="png")
    return summary


def _draw(ax: Any, panel: Panel, series: list, shade: list, start: float, end: float) -> None:
    import matplotlib.dates as mdates
    from matplotlib.ticker import NullFormatter

    ax.set_title(panel.title, fontsize=11, loc="left", fontweight="bold")
    ax.grid(True, alpha=0.3)
    ax.set_xlim(_dates([start, end]))
    locator = mdates.AutoDateLocator(minticks=4, maxticks=8)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S" if end - start <= 3 * 3600 else "%d %H:%M"))
    ax.tick_params(labelsize=8)
    for label, ts, vs in shade:
        for i, (t0, t1) in enumerate(_runs_of_one(ts, vs)):
            ax.axvspan(*_dates([t0, t1]), color="red", alpha=0.12, lw=0,
                       label=f"drift detected: {label}" if i == 0 else None)
    if not series:
        ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", va="center", fontsize=14, color="grey")
        return
    finite = [v for _, _, vs in series for v in vs if math.isfinite(v)]
    log_axis = panel.unit == "s" or (bool(panel.thresholds) and max(finite) > 10 * PSI_SIGNIFICANT)
    for label, ts, vs in series:
        values = [v if math.isfinite(v) and (v > 0 or not log_axis) else math.nan for v in vs]
        last = next((v for v in reversed(vs) if math.isfinite(v)), math.nan)
        text = f"{label}: {_fmt(last, panel.unit)}"  # the newest value, like Grafana's legend table
        if panel.step:
            ax.step(_dates(ts), values, where="post", label=text, lw=1.6)
        else:
            ax.plot(_dates(ts), values, label=text, lw=1.4)
    for value, colour in panel.thresholds:
        ax.axhline(value, color=colour, ls="--", lw=1.2, label=f"PSI {value:g}")
    if log_axis:
        ax.set_yscale("log")
    else:
        # A panel of zeros (no lag, no dead letters) keeps a readable 0-1 axis instead of 0-0.05.
        ax.set_ylim(0, None if max(finite, default=0) > 0 else 1)
    if panel.unit == "s":
        ax.yaxis.set_major_formatter(_seconds_formatter())
        low, high = ax.get_ylim()
        # Inside one decade a log axis has a single major tick (or none): label the minor ones then.
        ax.yaxis.set_minor_formatter(_seconds_formatter() if high / low < 10 else NullFormatter())
        ax.set_ylabel("latency", fontsize=9)
    elif panel.unit == "/s":
        ax.set_ylabel("per second (5 min rate)", fontsize=9)
    if panel.step:
        ax.yaxis.get_major_locator().set_params(integer=True)
    ax.legend(fontsize=7.5, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0, frameon=False)


def _dates(ts: list[float]) -> list[datetime]:
    return [datetime.fromtimestamp(t, UTC) for t in ts]


def _runs_of_one(ts: list[float], vs: list[float]) -> list[tuple[float, float]]:
    """[start, end) spans where a 0/1 series is 1."""
    runs, begin = [], None
    for i, (t, v) in enumerate(zip(ts, vs, strict=True)):
        if v >= 1 and begin is None:
            begin = t
        if begin is not None and (v < 1 or i == len(ts) - 1):
            runs.append((begin, t))
            begin = None
    return runs


def _seconds_formatter() -> Any:
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda v, _pos: _fmt(v, "s"))


def _fmt(value: float, unit: str) -> str:
    if not math.isfinite(value):
        return "n/a"
    if unit == "s":
        return f"{value * 1e3:.3g} ms" if value < 1 else f"{value:.3g} s"
    if unit == "/s":
        return f"{value:.3g}/s"
    return f"{value:.0f}" if value == int(value) else f"{value:.3g}"


def _human(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.3g} {unit}"
    return f"{seconds:.0f} s"
