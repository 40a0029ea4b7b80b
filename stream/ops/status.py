"""A terminal summary of a running stream for operators without Grafana (`skystream status`).

Reads the same series the dashboards use, either straight from the processes' /metrics endpoints
(``--targets``) or from a Prometheus server (``--prometheus``), takes two snapshots ``--interval``
seconds apart for rates, and prints throughput, latency, lag, dead letters, drift and serving models.
"""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from collections import defaultdict
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

__all__ = ["Sample", "query_prometheus", "render", "scrape", "summarise"]

Sample = tuple[str, dict[str, str], float]


def scrape(targets: list[str]) -> list[Sample]:
    """Every sample from the targets' /metrics endpoints (host:port or a full URL)."""
    out: list[Sample] = []
    for t in targets:
        url = t if t.startswith("http") else f"http://{t}/metrics"
        text = urllib.request.urlopen(url, timeout=5).read().decode()
        for fam in text_string_to_metric_families(text):
            out.extend((s.name, dict(s.labels), s.value) for s in fam.samples)
    return out


def query_prometheus(base: str) -> list[Sample]:
    """Every skystream_* series Prometheus holds now (instant vector), as samples."""
    q = urllib.parse.urlencode({"query": '{__name__=~"skystream_.*"}'})
    body = json.load(urllib.request.urlopen(f"{base.rstrip('/')}/api/v1/query?{q}", timeout=10))
    out: list[Sample] = []
    for r in body["data"]["result"]:
        labels = dict(r["metric"])
        name = labels.pop("__name__")
        labels.pop("instance", None)
        labels.pop("job", None)
        out.append((name, labels, float(r["value"][1])))
    return out


def _sum(samples: list[Sample], name: str, by: str | None = None, **match: str) -> dict[str, float]:
    acc: dict[str, float] = defaultdict(float)
    for n, labels, v in samples:
        if n == name and all(labels.get(k) == val for k, val in match.items()):
            acc[labels.get(by, "") if by else ""] += v
    return dict(acc)


def _quantile(samples: list[Sample], name: str, q: float) -> float | None:
    """Quantile from summed histogram buckets (linear within a bucket, like histogram_quantile)."""
    buckets: dict[float, float] = defaultdict(float)
    for n, labels, v in samples:
        if n == f"{name}_bucket":
            buckets[float(labels["le"])] += v
    if not buckets:
        return None
    edges = sorted(buckets)
    total = buckets[edges[-1]]
    if total == 0:
        return None
    rank, prev_edge, prev_count = q * total, 0.0, 0.0
    for e in edges:
        if buckets[e] >= rank:
            if e == float("inf"):
                return prev_edge
            frac = (rank - prev_count) / max(buckets[e] - prev_count, 1e-12)
            return prev_edge + (e - prev_edge) * frac
        prev_edge, prev_count = e, buckets[e]
    return prev_edge


def summarise(before: list[Sample], after: list[Sample], seconds: float) -> dict[str, Any]:
    """Rates, latencies, lag, totals, models and drift between two snapshots ``seconds`` apart."""
    def rate(name: str, by: str | None = None, **m: str) -> dict[str, float]:
        """Per-second increase of a counter over the interval, per value of label ``by``."""
        a, b = _sum(after, name, by, **m), _sum(before, name, by, **m)
        return {k: max(0.0, v - b.get(k, 0.0)) / seconds for k, v in a.items()}

    models = [f"{labels.get('task')}: {labels.get('model')} v{labels.get('version')}"
              for n, labels, _ in after if n == "skystream_model_info"]
    drift: dict[str, dict[str, float]] = defaultdict(dict)
    for n, labels, v in after:
        if n == "skystream_drift_psi":
            drift[labels["task"]][labels["feature"]] = v
    return {
        "files_published_per_s": sum(rate("skystream_files_published_total").values()),
        "processed_per_s": rate("skystream_messages_processed_total", "agent", outcome="ok"),
        "rejected_per_s": sum(rate("skystream_messages_processed_total", outcome="rejected").values()),
        "totals": {
            "files_published": sum(_sum(after, "skystream_files_published_total").values()),
            "predictions": _sum(after, "skystream_predictions_total", "label"),
            "dead_letters": _sum(after, "skystream_dead_letters_total", "reason"),
            "alerts": sum(_sum(after, "skystream_alerts_total").values()),
        },
        "latency_p50_s": _quantile(after, "skystream_end_to_end_latency_seconds", 0.5),
        "latency_p99_s": _quantile(after, "skystream_end_to_end_latency_seconds", 0.99),
        "lag": _sum(after, "skystream_consumer_lag_messages", "topic"),
        "drift_psi": dict(drift),
        "drifted": {k: bool(v) for k, v in _sum(after, "skystream_drift_detected", "task").items()},
        "models": sorted(set(models)),
        "models_refused": _sum(after, "skystream_model_refused_total", "reason"),
    }


def render(s: dict[str, Any]) -> str:
    """The summary as plain-text lines."""
    def ms(x: float | None) -> str:
        """Seconds as whole milliseconds, or ``n/a``."""
        return "n/a" if x is None else f"{x * 1000:.0f} ms"

    lines = [
        f"throughput   files published {s['files_published_per_s']:.1f}/s; processed "
        + ", ".join(f"{k} {v:.1f}/s" for k, v in sorted(s["processed_per_s"].items())) + f"; rejected "
        f"{s['rejected_per_s']:.1f}/s",
        f"latency      file seen -> prediction: p50 {ms(s['latency_p50_s'])}, p99 {ms(s['latency_p99_s'])}",
        "lag          " + (", ".join(f"{k} {v:.0f}" for k, v in sorted(s["lag"].items())) or "n/a"),
        f"totals       files {s['totals']['files_published']:.0f}; predictions "
        + (", ".join(f"{k} {v:.0f}" for k, v in sorted(s["totals"]["predictions"].items())) or "0")
        + f"; alerts {s['totals']['alerts']:.0f}",
        "dead letters " + (", ".join(f"{k} {v:.0f}" for k, v in sorted(s["totals"]["dead_letters"].items())) or "none"),
        "models       " + ("; ".join(s["models"]) or "none loaded yet"),
    ]
    if s["models_refused"]:
        lines.append("refused      " + ", ".join(f"{k} {v:.0f}" for k, v in s["models_refused"].items()))
    for task, feats in sorted(s["drift_psi"].items()):
        flag = "DRIFTED" if s["drifted"].get(task) else "ok"
        worst = sorted(feats.items(), key=lambda kv: -kv[1])[:4]
        lines.append(f"drift {task:<6} {flag}: " + ", ".join(f"{k} {v:.2f}" for k, v in worst))
    return "\n".join(lines)
