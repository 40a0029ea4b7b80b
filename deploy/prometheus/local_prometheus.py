"""Run Prometheus on this machine (no Docker) with SkyStream's rules, scraping given targets.

    python deploy/prometheus/local_prometheus.py --watcher 127.0.0.1:9401 --worker 127.0.0.1:9400 \
        [--worker 127.0.0.1:9402 ...] [--port 9090] [--dir var/prometheus] [--interval 1s] [--alert-for 0s]

It copies prometheus.local.yml and rules/ into a working directory, writes the file-discovery target
lists there (targets/*.json) and starts Debian's `prometheus` on loopback until Ctrl-C. Tests use
`LocalPrometheus` the same way. Standard library only.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
CONFIG = HERE / "prometheus.local.yml"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prepare(
    workdir: Path,
    watchers: Sequence[str],
    workers: Sequence[str],
    alertmanagers: Sequence[str] = (),
    interval: str | None = None,
    alert_for: str | None = None,
) -> Path:
    """Write a runnable configuration into ``workdir``; return the config file's path.

    ``interval`` replaces the scrape and rule-evaluation interval (e.g. "1s" in tests);
    ``alert_for`` replaces every alert's ``for:`` duration (e.g. "0s", so a demo sees an alert fire
    without waiting minutes). Both only change the copies in ``workdir``.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    text = CONFIG.read_text()
    if interval:
        text, n = re.subn(r"(?m)^(  (?:scrape|evaluation)_interval:) \S+$", rf"\1 {interval}", text)
        if n != 2:
            raise ValueError(f"{CONFIG.name}: expected global scrape_interval and evaluation_interval")
    config = workdir / "prometheus.yml"
    config.write_text(text)
    shutil.copytree(HERE / "rules", workdir / "rules", dirs_exist_ok=True)
    if alert_for:
        for rules in (workdir / "rules").glob("*.yml"):
            rules.write_text(re.sub(r"(?m)^(\s+for:) \S+$", rf"\1 {alert_for}", rules.read_text()))
    targets = workdir / "targets"
    targets.mkdir(exist_ok=True)
    for name, addresses in (("watcher", watchers), ("workers", workers), ("alertmanager", alertmanagers)):
        groups = [{"targets": list(addresses), "labels": {}}] if addresses else []
        (targets / f"{name}.json").write_text(json.dumps(groups))
    return config


class LocalPrometheus:
    """A Prometheus process on 127.0.0.1; use as a context manager."""

    def __init__(
        self,
        watchers: Sequence[str],
        workers: Sequence[str],
        workdir: Path | None = None,
        port: int | None = None,
        interval: str | None = None,
        alert_for: str | None = None,
        binary: str = "prometheus",
    ) -> None:
        self._tmp = None if workdir else tempfile.TemporaryDirectory(prefix="skystream-prometheus-")
        self.workdir = Path(workdir or self._tmp.name)  # type: ignore[union-attr]
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = prepare(self.workdir, watchers, workers, interval=interval, alert_for=alert_for)
        self._binary = binary
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> LocalPrometheus:
        binary = shutil.which(self._binary)
        if not binary:
            raise FileNotFoundError(f"{self._binary} not found (Debian: apt-get install prometheus)")
        self.log = open(self.workdir / "prometheus.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [binary, f"--config.file={self.config}", f"--storage.tsdb.path={self.workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdout=self.log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited: {(self.workdir / 'prometheus.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as r:
                    if r.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError):
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"prometheus not ready on {self.url} after {timeout} s")
            time.sleep(0.2)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if getattr(self, "log", None):
            self.log.close()
        if self._tmp:
            self._tmp.cleanup()

    def __enter__(self) -> LocalPrometheus:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def api(self, path: str, **params: str) -> Any:
        """GET /api/v1/<path>; returns "data", raises ValueError with Prometheus's error otherwise."""
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                body = json.load(r)
        except urllib.error.HTTPError as exc:  # 400 for an unparsable query, with the reason
            body = json.load(exc)
        if body.get("status") != "success":
            raise ValueError(f"{body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict]:
        """Instant query (now, or at unix time ``at``); the result vector (a one-element list for a scalar)."""
        params = {"query": expr} if at is None else {"query": expr, "time": f"{at:.3f}"}
        data = self.api("query", **params)
        return data["result"] if data["resultType"] in ("vector", "matrix") else [{"value": data["result"]}]

    def value(self, expr: str) -> float | None:
        """The value of a query that yields at most one series (None when it yields none)."""
        result = self.query(expr)
        if len(result) > 1:
            raise ValueError(f"{expr!r} yields {len(result)} series, expected at most one")
        return float(result[0]["value"][1]) if result else None

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[dict]:
        """Range query: one {"metric", "values": [[t, "v"], ...]} per series."""
        return self.api("query_range", query=expr, start=f"{start:.3f}", end=f"{end:.3f}", step=f"{step:g}")["result"]

    def alerts(self, state: str | None = None) -> list[dict]:
        """Alerts the rule manager holds (/api/v1/alerts), optionally only those in ``state``
        (pending or firing)."""
        return [a for a in self.api("alerts")["alerts"] if state is None or a["state"] == state]

    def wait_for(self, check: Callable[[], Any], timeout: float, what: str, poll: float = 0.5) -> Any:
        """Poll ``check`` until it returns something truthy (returned), or raise TimeoutError after
        ``timeout`` seconds. Scrapes and rule evaluations arrive on their own schedule: tests wait for
        a condition with a deadline rather than sleeping a guessed time."""
        deadline = time.monotonic() + timeout
        while True:
            result = check()
            if result:
                return result
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
            time.sleep(poll)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--watcher", action="append", default=[], metavar="HOST:PORT", help="watcher /metrics address")
    ap.add_argument("--worker", action="append", default=[], metavar="HOST:PORT", help="worker /metrics address")
    ap.add_argument("--port", type=int, default=9090, help="Prometheus port on 127.0.0.1 (default 9090)")
    ap.add_argument("--dir", type=Path, default=Path("var/prometheus"),
                    help="working directory (default var/prometheus)")
    ap.add_argument("--interval", default=None, metavar="DURATION",
                    help="scrape and rule-evaluation interval, e.g. 1s (default: the config's 5s)")
    ap.add_argument("--alert-for", default=None, metavar="DURATION",
                    help="replace every alert's for: duration, e.g. 0s to see alerts fire at once in a demo")
    args = ap.parse_args(argv)
    prom = LocalPrometheus(args.watcher, args.worker, workdir=args.dir, port=args.port, interval=args.interval,
                           alert_for=args.alert_for)
    # SIGTERM too stops Prometheus with us (the context manager's exit), not just Ctrl-C.
    signal.signal(signal.SIGTERM, _interrupt)
    with prom:
        print(f"Prometheus on {prom.url} (config {prom.config}); Ctrl-C to stop.", flush=True)
        try:
            prom.proc.wait()  # type: ignore[union-attr]
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
