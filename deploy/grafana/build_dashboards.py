"""Generate SkyStream's Grafana dashboards (JSON) and list every PromQL query they run.

    python deploy/grafana/build_dashboards.py            # (re)write deploy/grafana/dashboards/*.json
    python deploy/grafana/build_dashboards.py --check    # exit 1 if the committed JSON is stale
    python deploy/grafana/build_dashboards.py --queries  # JSON list of every query, variables filled in

The dashboards are code so they stay reviewable and reproducible; the committed JSON is what Grafana's
file provisioning loads. `panel_queries()` is what tests use to run each panel's PromQL against a
real Prometheus. Standard library only (this runs wherever Python does, no SkyStream install needed).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
OUT_DIR = HERE / "dashboards"

# Fixed uid, provisioned in provisioning/datasources/prometheus.yml.
DATASOURCE = {"type": "prometheus", "uid": "skystream-prometheus"}

# What Grafana substitutes for its variables when a test runs the queries outside Grafana.
DEFAULT_VARIABLES = {"task": ".*", "__rate_interval": "1m", "__range": "1h", "__interval": "15s"}

Panel = dict[str, Any]


# -- panel builders -------------------------------------------------------------------------------
def target(expr: str, legend: str = "", ref: str = "A", instant: bool = False, fmt: str = "time_series") -> dict:
    return {
        "datasource": DATASOURCE,
        "refId": ref,
        "expr": expr,
        "legendFormat": legend or "__auto",
        "instant": instant,
        "range": not instant,
        "format": fmt,
    }


def _targets(queries: list[tuple[str, str]], **kwargs: Any) -> list[dict]:
    return [target(expr, legend, ref=chr(ord("A") + i), **kwargs) for i, (expr, legend) in enumerate(queries)]


def _thresholds(*steps: tuple[float | None, str]) -> dict:
    return {"mode": "absolute", "steps": [{"value": v, "color": c} for v, c in steps]}


def timeseries(
    title: str,
    queries: list[tuple[str, str]],
    unit: str = "short",
    description: str = "",
    stack: bool = False,
    bars: bool = False,
    thresholds: dict | None = None,
) -> Panel:
    custom: dict[str, Any] = {
        "drawStyle": "bars" if bars else "line",
        "lineWidth": 1,
        "fillOpacity": 60 if bars else 10,
        "showPoints": "never",
        "spanNulls": False,
        "stacking": {"mode": "normal" if stack else "none", "group": "A"},
    }
    if thresholds:
        custom["thresholdsStyle"] = {"mode": "line+area"}
    return {
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "targets": _targets(queries),
        "fieldConfig": {
            "defaults": {
                "unit": unit,
                "custom": custom,
                "thresholds": thresholds or _thresholds((None, "green")),
            },
            "overrides": [],
        },
        "options": {
            "legend": {"displayMode": "table", "placement": "bottom", "calcs": ["lastNotNull", "max"]},
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
    }


def stat(
    title: str,
    expr: str,
    unit: str = "short",
    description: str = "",
    legend: str = "",
    thresholds: dict | None = None,
    mappings: list[dict] | None = None,
) -> Panel:
    return {
        "type": "stat",
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "targets": [target(expr, legend, instant=True)],
        "fieldConfig": {
            "defaults": {
                "unit": unit,
                "thresholds": thresholds or _thresholds((None, "green")),
                "mappings": mappings or [],
            },
            "overrides": [],
        },
        "options": {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "background",
            "graphMode": "none",
            "textMode": "auto",
            "justifyMode": "auto",
            "orientation": "auto",
        },
    }


def table(title: str, expr: str, description: str = "", hide: tuple[str, ...] = ("Time",)) -> Panel:
    return {
        "type": "table",
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "targets": [target(expr, instant=True, fmt="table")],
        "fieldConfig": {"defaults": {}, "overrides": []},
        "options": {"showHeader": True, "cellHeight": "sm"},
        "transformations": [
            {"id": "organize", "options": {"excludeByName": dict.fromkeys(hide, True), "renameByName": {}}}
        ],
    }


def bargauge(title: str, expr: str, legend: str, unit: str = "short", thresholds: dict | None = None,
             description: str = "") -> Panel:
    return {
        "type": "bargauge",
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "targets": [target(expr, legend, instant=True)],
        "fieldConfig": {
            "defaults": {"unit": unit, "min": 0, "thresholds": thresholds or _thresholds((None, "green"))},
            "overrides": [],
        },
        "options": {
            "orientation": "horizontal",
            "displayMode": "gradient",
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "showUnfilled": True,
        },
    }


def heatmap(title: str, expr: str, description: str = "") -> Panel:
    return {
        "type": "heatmap",
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "targets": [target(expr, "{{le}}", fmt="heatmap")],
        "fieldConfig": {"defaults": {}, "overrides": []},
        "options": {
            "calculate": False,
            "yAxis": {"axisPlacement": "left", "unit": "percentunit"},
            "cellGap": 1,
            "color": {"mode": "scheme", "scheme": "Oranges", "steps": 64},
            "tooltip": {"show": True, "yHistogram": True},
        },
    }


def row(title: str) -> Panel:
    return {"type": "row", "title": title, "collapsed": False, "panels": []}


def layout(rows: list[tuple[Panel, list[tuple[Panel, int, int]]]]) -> list[Panel]:
    """Place panels on Grafana's 24-column grid: each row is (row panel, [(panel, width, height)])."""
    panels: list[Panel] = []
    y = 0
    for row_panel, items in rows:
        panels.append(dict(row_panel, gridPos={"x": 0, "y": y, "w": 24, "h": 1}))
        y += 1
        x, line_h = 0, 0
        for panel, w, h in items:
            if x + w > 24:
                x, y = 0, y + line_h
                line_h = 0
            panels.append(dict(panel, gridPos={"x": x, "y": y, "w": w, "h": h}))
            x += w
            line_h = max(line_h, h)
        y += line_h
    for i, p in enumerate(panels, start=1):
        p["id"] = i
    return panels


def task_variable(metric: str) -> dict:
    return {
        "name": "task",
        "label": "Task",
        "type": "query",
        "datasource": DATASOURCE,
        "query": {"query": f"label_values({metric}, task)", "refId": "task"},
        "definition": f"label_values({metric}, task)",
        "refresh": 2,
        "multi": True,
        "includeAll": True,
        "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "sort": 1,
    }


def dashboard(uid: str, title: str, description: str, panels: list[Panel], variables: list[dict],
              annotations: list[dict] | None = None) -> dict:
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["skystream"],
        "timezone": "utc",
        "editable": False,
        "graphTooltip": 1,
        "refresh": "30s",
        "time": {"from": "now-3h", "to": "now"},
        "schemaVersion": 39,
        "version": 1,
        "templating": {"list": variables},
        "annotations": {"list": annotations or []},
        "links": [{"type": "dashboards", "tags": ["skystream"], "asDropdown": False, "title": "SkyStream"}],
        "panels": panels,
    }


# -- the dashboards -------------------------------------------------------------------------------
UP_DOWN = [{"type": "value", "options": {"0": {"text": "DOWN", "color": "red"},
                                         "1": {"text": "UP", "color": "green"}}}]
OK_DRIFT = [{"type": "value", "options": {"0": {"text": "OK", "color": "green"},
                                          "1": {"text": "DRIFT", "color": "red"}}}]
RATIO_THRESHOLDS = _thresholds((None, "green"), (0.1, "red"))
PSI_THRESHOLDS = _thresholds((None, "green"), (0.1, "yellow"), (0.25, "red"))

MODEL_VERSIONS = table(
    "Serving model versions",
    "task_model_version:skystream_model_info:count",
    description="Each task's model and version, with the number of workers serving it (Value). "
    "More than one version of a task for long means a hot swap did not reach every worker.",
)

MODEL_SWAP_ANNOTATION = {
    "name": "Model versions",
    "datasource": DATASOURCE,
    "enable": True,
    "iconColor": "blue",
    # A (task, version) that no worker served 5 minutes earlier: a model was swapped in.
    "expr": "count by (task, model, version) (skystream_model_info == 1) "
    "unless count by (task, model, version) (skystream_model_info offset 5m == 1)",
    "step": "1m",
    "titleFormat": "{{task}} model {{model}} v{{version}}",
    "textFormat": "now serving",
    "useValueForTime": False,
}


# Delivery counters are created by their first increment (a whole republish batch, the first reset):
# increase() cannot see that, so the `unless ... offset` terms add a series born inside the window.
RESETS = "skystream_broker_resets_total"
REPUBLISHED = "skystream_files_republished_total"

BROKER_RESET_ANNOTATION = {
    "name": "Broker resets",
    "datasource": DATASOURCE,
    "enable": True,
    "iconColor": "red",
    "expr": f"sum by (process) (increase({RESETS}[2m]) > 0 or ({RESETS} unless {RESETS} offset 2m))",
    "step": "1m",
    "titleFormat": "Broker reset",
    "textFormat": "the broker came back without its state (seen by the {{process}})",
    "useValueForTime": False,
}

def overview() -> dict:
    health = [
        (stat("Workers up", 'count(up{job="skystream-worker"} == 1) or vector(0)',
              thresholds=_thresholds((None, "red"), (1, "green"))), 4, 4),
        (stat("Watcher", 'max(up{job="skystream-watcher"}) or vector(0)', mappings=UP_DOWN,
              thresholds=_thresholds((None, "red"), (1, "green"))), 4, 4),
        (stat("Newest input age", "min(source:skystream_last_input_age_seconds:min)", unit="s",
              description="Time since the watcher published its newest file (any source).",
              thresholds=_thresholds((None, "green"), (21600, "orange"))), 4, 4),
        (stat("Predictions / s", "sum(task_label:skystream_predictions:rate5m) or vector(0)", unit="ops"), 4, 4),
        (stat("Dead letters (time range)", "sum(increase(skystream_dead_letters_total[$__range])) or vector(0)",
              thresholds=_thresholds((None, "green"), (1, "orange"))), 4, 4),
        (stat("Firing alerts", 'count(ALERTS{alertstate="firing", alertname=~"SkyStream.*"}) or vector(0)',
              thresholds=_thresholds((None, "green"), (1, "red"))), 4, 4),
    ]
    throughput = [
        (timeseries("Files discovered and published", [
            ("source:skystream_files_discovered:rate5m", "discovered {{source}}"),
            ("source_kind:skystream_files_published:rate5m", "published {{kind}} {{source}}"),
        ], unit="ops", description="Watcher: files found complete, and file events published to Kafka."), 12, 8),
        (timeseries("Messages processed per agent", [
            ("agent_outcome:skystream_messages_processed:rate5m", "{{agent}} {{outcome}}"),
        ], unit="ops", stack=True, description="Rejected messages went to the dead-letter topic."), 12, 8),
        (timeseries("Predictions by label", [
            ('task_label:skystream_predictions:rate5m{task=~"$task"}', "{{task}} {{label}}"),
        ], unit="ops", stack=True), 12, 8),
        (timeseries("Alerts published", [
            ('task_reason:skystream_alerts:rate5m{task=~"$task"}', "{{task}} {{reason}}"),
        ], unit="ops", stack=True, description="Messages on the alerts topic for subscribers."), 12, 8),
    ]
    delivery = [
        (timeseries("Unresolved files per source", [
            ("max by (source) (skystream_files_unresolved)", "{{source}}"),
        ], unit="short", thresholds=_thresholds((None, "green"), (100, "orange")),
           description="Files the watcher published with no prediction or dead letter seen yet. Alerts when "
           "above 100 and not going down for 15 minutes (work stuck)."), 10, 8),
        (timeseries("Files republished", [
            (f"sum by (source) (increase({REPUBLISHED}[$__rate_interval]) > 0 "
             f"or ({REPUBLISHED} unless {REPUBLISHED} offset $__rate_interval))", "{{source}}"),
        ], unit="short", bars=True,
           description="Files published again per interval: the broker lost them, or no outcome came back "
           "within SKYSTREAM_WATCH_REPUBLISH_SECONDS. Should stay empty on Apache Kafka."), 8, 8),
        (stat("Broker resets (time range)",
              # round(): increase() extrapolates to the range's edges (2.01 resets).
              f"round((sum(increase({RESETS}[$__range])) or vector(0)) "
              f"+ (sum(min_over_time({RESETS}[$__range]) unless {RESETS} offset $__range) or vector(0)))",
              thresholds=_thresholds((None, "green"), (1, "red")),
              description="Times a process found the broker back without its state (marked on the time "
              "series too). Critical on Kafka; every restart of the embedded broker counts."), 6, 8),
    ]
    latency = [
        (timeseries("Stage latency", [
            ("stage:skystream_stage_latency_seconds:p50_5m", "p50 {{stage}}"),
            ("stage:skystream_stage_latency_seconds:p99_5m", "p99 {{stage}}"),
        ], unit="s", description="Time one message spends in each agent."), 6, 8),
        (timeseries("End-to-end latency (file detected to prediction)", [
            ("kind:skystream_end_to_end_latency_seconds:p50_5m", "p50 {{kind}}"),
            ("kind:skystream_end_to_end_latency_seconds:p99_5m", "p99 {{kind}}"),
        ], unit="s"), 6, 8),
        (timeseries("Inference time per call", [
            ('task:skystream_inference_seconds:p50_5m{task=~"$task"}', "p50 {{task}}"),
            ('task:skystream_inference_seconds:p99_5m{task=~"$task"}', "p99 {{task}}"),
        ], unit="s", description="ONNX Runtime time of one call (one batch)."), 6, 8),
        (timeseries("Inference batch size", [
            ('task:skystream_inference_batch_size:mean5m{task=~"$task"}', "mean {{task}}"),
        ], unit="short", description="Samples per ONNX Runtime call."), 6, 8),
    ]
    lag = [
        (timeseries("Consumer lag per topic", [
            ("topic:skystream_consumer_lag_messages:sum", "{{topic}}"),
        ], unit="short", stack=True, description="Messages not yet processed, summed over partitions."), 8, 8),
        (timeseries("Consumer lag per partition", [
            ("topic_partition:skystream_consumer_lag_messages:max", "{{topic}} [{{partition}}]"),
        ], unit="short"), 8, 8),
        (timeseries("Lag trend", [
            ("deriv(topic:skystream_consumer_lag_messages:sum[10m])", "{{topic}}"),
        ], unit="short", description="Change of lag per second over 10 minutes: above 0 the workers "
           "are falling behind."), 8, 8),
        (table("Partitions per worker", "sum by (instance) (skystream_assigned_partitions)",
               description="A worker with 0 partitions is idle: there are more workers than partitions "
               "(SKYSTREAM_PARTITIONS)."), 24, 6),
    ]
    dead = [
        (timeseries("Dead letters by stage and reason", [
            ("stage_reason:skystream_dead_letters:rate5m", "{{stage}}: {{reason}}"),
        ], unit="ops", stack=True, bars=True), 10, 8),
        (timeseries("Reject ratio", [
            ("agent:skystream_messages_rejected:ratio_rate5m", "{{agent}}"),
            ("skystream:watch_dead_letters:ratio_rate5m", "watcher"),
        ], unit="percentunit", thresholds=RATIO_THRESHOLDS,
           description="Share of messages sent to the dead-letter topic; alerts above 10 %."), 7, 8),
        (table("Dead letters by reason (time range)",
               "sort_desc(sum by (stage, reason) (increase(skystream_dead_letters_total[$__range])))",
               description="Counts by stage and reason over the dashboard's time range."), 7, 8),
    ]
    models = [
        (MODEL_VERSIONS, 8, 7),
        (table("Model per worker", 'skystream_model_info{task=~"$task"} == 1', hide=("Time", "__name__", "Value")),
         8, 7),
        (timeseries("Model versions refused", [
            ("sum by (task, reason) (increase(skystream_model_refused_total[$__rate_interval]))",
             "{{task}} {{reason}}"),
        ], unit="short", bars=True, description="Published versions a worker would not swap in."), 8, 7),
    ]
    panels = layout([
        (row("Health"), health),
        (row("Throughput"), throughput),
        (row("Delivery"), delivery),
        (row("Latency"), latency),
        (row("Consumer lag"), lag),
        (row("Dead letters"), dead),
        (row("Models"), models),
    ])
    return dashboard(
        "skystream-overview", "SkyStream / Overview",
        "Throughput, delivery, latency, lag, dead letters and serving models of the SkyStream stream.",
        panels, [task_variable("skystream_model_info")], [MODEL_SWAP_ANNOTATION, BROKER_RESET_ANNOTATION],
    )


def drift() -> dict:
    drift_row = [
        (stat("Drift by task", 'task:skystream_drift_detected:max{task=~"$task"}', legend="{{task}}",
              mappings=OK_DRIFT, thresholds=_thresholds((None, "green"), (1, "red")),
              description="Decided by the workers against the reference stored with the serving model."), 6, 8),
        (bargauge("PSI now, by feature", 'sort_desc(task_feature:skystream_drift_psi:max{task=~"$task"})',
                  "{{task}} {{feature}}", thresholds=PSI_THRESHOLDS,
                  description="Population stability index over the sliding window: < 0.1 stable, "
                  "0.1-0.25 moderate shift, > 0.25 significant."), 6, 8),
        (timeseries("PSI per feature", [
            ('task_feature:skystream_drift_psi:max{task=~"$task"}', "{{task}} {{feature}}"),
        ], unit="short", thresholds=PSI_THRESHOLDS), 12, 8),
    ]
    predictions = [
        (heatmap("Top-class probability distribution",
                 'sum by (le) (rate(skystream_prediction_score_bucket{task=~"$task"}[$__rate_interval]))',
                 description="How confident the model is; a shift often accompanies input drift."), 8, 8),
        (timeseries("Median top-class probability", [
            ('histogram_quantile(0.5, sum by (task, le) '
             '(rate(skystream_prediction_score_bucket{task=~"$task"}[$__rate_interval])))', "{{task}}"),
        ], unit="percentunit"), 8, 8),
        (timeseries("Predicted label share", [
            ('task_label:skystream_predictions:rate5m{task=~"$task"} '
             '/ ignoring (label) group_left sum by (task) (task_label:skystream_predictions:rate5m{task=~"$task"})',
             "{{task}} {{label}}"),
        ], unit="percentunit", stack=True), 8, 8),
    ]
    models = [(MODEL_VERSIONS, 24, 6)]
    panels = layout([
        (row("Input drift"), drift_row),
        (row("Predictions"), predictions),
        (row("Models"), models),
    ])
    return dashboard(
        "skystream-drift", "SkyStream / Drift and models",
        "Drift of model inputs against each serving model's reference, prediction mix and model versions.",
        panels, [task_variable("skystream_model_info")], [MODEL_SWAP_ANNOTATION],
    )


DASHBOARDS = {"skystream-overview.json": overview, "skystream-drift.json": drift}


def render(build: Any) -> str:
    return json.dumps(build(), indent=2, sort_keys=True) + "\n"


# -- queries, for tests ---------------------------------------------------------------------------
def expand_variables(expr: str, values: dict[str, str] | None = None) -> str:
    """Replace Grafana variables ($task, ${task}, $__rate_interval, ...) by concrete values."""
    values = {**DEFAULT_VARIABLES, **(values or {})}

    def sub(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        if name not in values:
            raise KeyError(f"no value for Grafana variable ${name} in {expr!r}")
        return values[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", sub, expr)


def panel_queries(dash: dict, values: dict[str, str] | None = None, expand: bool = True) -> list[dict[str, str]]:
    """Every PromQL expression of a dashboard: panel targets (rows included) and annotations."""
    found: list[dict[str, str]] = []

    def walk(panels: list[Panel]) -> None:
        for p in panels:
            walk(p.get("panels", []))
            for t in p.get("targets", []):
                found.append({"panel": p["title"], "ref": t["refId"], "expr": t["expr"]})

    walk(dash.get("panels", []))
    for a in dash.get("annotations", {}).get("list", []):
        if a.get("expr"):
            found.append({"panel": f"annotation: {a['name']}", "ref": "-", "expr": a["expr"]})
    for q in found:
        q["dashboard"] = dash["uid"]
        if expand:
            q["expr"] = expand_variables(q["expr"], values)
    return found


def load_dashboards(directory: Path = OUT_DIR) -> dict[str, dict]:
    return {p.name: json.loads(p.read_text()) for p in sorted(directory.glob("*.json"))}


def all_queries(directory: Path = OUT_DIR, values: dict[str, str] | None = None) -> list[dict[str, str]]:
    """The queries of the committed dashboard files (what Grafana will actually run)."""
    return [q for d in load_dashboards(directory).values() for q in panel_queries(d, values)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="fail if the JSON files differ from the generator")
    mode.add_argument("--queries", action="store_true", help="print every panel's PromQL as JSON")
    ap.add_argument("--raw", action="store_true", help="with --queries: keep Grafana variables unexpanded")
    args = ap.parse_args(argv)

    if args.queries:
        dashboards = [json.loads(render(build)) for build in DASHBOARDS.values()]
        out = [q for d in dashboards for q in panel_queries(d, expand=not args.raw)]
        print(json.dumps(out, indent=1))
        return 0
    stale = []
    for name, build in DASHBOARDS.items():
        path = OUT_DIR / name
        text = render(build)
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            OUT_DIR.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"wrote {path.relative_to(HERE.parent.parent)}")
    if stale:
        print(f"stale dashboards (run {Path(__file__).name}): {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
