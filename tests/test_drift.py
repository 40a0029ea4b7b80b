"""Drift detection: the PSI arithmetic, the reference, the sliding window, and a demonstration on the
running stream where Prometheus's drift alert fires for a shifted population and stays quiet for the
unshifted one.

The populations are real SMASSII spectra. The shifted one is the same spectra as another survey
would deliver them: cut to 0.49-0.92 µm (the S3OS2 range; stream.features.spectra accepts it, covering 90 % of
the model grid), so only the data-quality figures and the blue end of the spectrum move.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np
import pytest
from helpers import load_module, wait_until
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

import schemas
from stream.devstack.localstack import LocalStack, collect
from stream.errors import Rejected
from stream.features import spectra
from stream.models.registry import BUNDLED
from stream.scoring import drift
from stream.scoring.drift import PREDICTED_CLASS, DriftMonitor, build_reference, psi

ROOT = Path(__file__).resolve().parents[1]
SHIFT_RANGE_UM = (0.49, 0.92)


# -- PSI on known distributions ---------------------------------------------------------------------
def test_psi_formula_on_known_fractions() -> None:
    p = np.array([0.5, 0.5])
    assert psi(p, p) == 0.0
    # sum (q - p) ln(q / p) = 0.4 ln 1.8 + 0.4 ln 5
    assert psi(p, np.array([0.9, 0.1])) == pytest.approx(0.4 * np.log(1.8) + 0.4 * np.log(5), rel=1e-9)
    # Symmetric, and counts work as well as fractions (both are normalised).
    a, b = np.array([0.2, 0.3, 0.5]), np.array([0.4, 0.4, 0.2])
    assert psi(a, b) == pytest.approx(psi(b, a))
    assert psi(a * 1000, b * 37) == pytest.approx(psi(a, b))
    # A bin that is empty on one side costs a large but finite amount (floored, not infinite).
    empty = psi(np.array([0.5, 0.5]), np.array([1.0, 0.0]))
    assert np.isfinite(empty) and empty > 4


@pytest.mark.parametrize("shift", [0.1, 0.3, 0.5, 0.7, 1.0])
def test_psi_of_a_shifted_normal_on_decile_bins(shift: float) -> None:
    """For N(0,1) against N(shift,1) the continuous PSI (Jeffreys divergence) is shift²; binning at
    the reference deciles can only lose information, and loses little: 0.93-0.96 x shift²."""
    edges = [NormalDist().inv_cdf(q / 10) for q in range(1, 10)]

    def fractions(mu: float) -> np.ndarray:
        return np.diff([0.0, *(NormalDist(mu, 1).cdf(e) for e in edges), 1.0])

    value = psi(fractions(0.0), fractions(shift))
    assert 0.9 * shift**2 < value <= shift**2
    # The conventional bands: a 0.3 sigma shift is "stable" (< 0.1), 0.7 sigma "significant" (> 0.25).
    if shift <= 0.3:
        assert value < 0.1
    if shift >= 0.7:
        assert value > drift.DEFAULT_THRESHOLD


def test_psi_of_samples_from_the_reference_is_small_only_with_enough_of_them() -> None:
    """Sampling noise alone: PSI of n draws from the reference itself is about (bins - 1) / n, so a
    window of 500 is far below the 0.25 threshold while 50 draws come close to it."""
    rng = np.random.default_rng(0)
    edges = np.quantile(rng.normal(size=100_000), np.linspace(0, 1, 11)[1:-1])
    ref = np.full(10, 0.1)

    def sample_psi(n: int) -> float:
        counts = np.bincount(np.searchsorted(edges, rng.normal(size=n), side="right"), minlength=10)
        return psi(ref, counts)

    for n, mean_below in ((500, 0.04), (100, 0.2)):
        values = np.array([sample_psi(n) for _ in range(300)])
        assert values.mean() < mean_below
        assert values.mean() == pytest.approx(9 / n, rel=0.35)


# -- the reference, from real spectra ----------------------------------------------------------------
def features_of(data: bytes, uri: str) -> dict[str, Any]:
    """What the score agent sees: the SpectrumFeatures record after its trip through Avro."""
    record = spectra.spectrum_features(data, uri=uri, file_id=hashlib.sha256(data).hexdigest(), detected_at_ms=0)
    return schemas.decode(schemas.encode("SpectrumFeatures", record), expect="SpectrumFeatures")[1]


def cut_table(data: bytes, lo: float, hi: float) -> bytes:
    """A SMASSII table as a narrower survey would deliver it: only the rows inside [lo, hi] µm."""
    rows = [line for line in data.decode().splitlines()
            if line.split() and lo - 1e-9 <= float(line.split()[0]) <= hi + 1e-9]
    return ("\n".join(rows) + "\n").encode()


def stand_in_label(record: dict[str, Any]) -> str:
    """A crude class from the spectral slope, standing in for a model's prediction: the monitor only
    compares how often each label occurs."""
    slope = drift.spectrum_summary(record)["slope_per_um"]
    return "C" if slope < 0.15 else "S" if slope > 0.35 else "X"


@pytest.fixture(scope="module")
def populations(smass_dir: Path) -> dict[str, list[dict[str, Any]]]:
    """Real spectra split at random into a reference half and a live half, plus the live half cut to
    0.49-0.92 µm."""
    files = sorted(smass_dir.iterdir())
    order = np.random.default_rng(42).permutation(len(files))
    reference, live, shifted = [], [], []
    for rank, i in enumerate(order):
        data = files[i].read_bytes()
        (reference if rank % 2 else live).append(features_of(data, files[i].name))
        if rank % 2 == 0:
            try:
                shifted.append(features_of(cut_table(data, *SHIFT_RANGE_UM), files[i].name))
            except Rejected:  # a spectrum that ends early would cover too little after the cut
                pass
    return {"reference": reference, "live": live, "shifted": shifted}


@pytest.fixture(scope="module")
def reference(populations: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    ref = populations["reference"]
    return build_reference("spectrum", ref, [stand_in_label(r) for r in ref])


def test_reference_holds_decile_bins_of_every_summary_feature(reference: dict[str, Any]) -> None:
    assert json.loads(json.dumps(reference)) == reference  # it travels in the model's metadata.json
    assert reference["method"] == "psi" and reference["kind"] == "spectrum"
    assert reference["threshold"] == drift.DEFAULT_THRESHOLD and reference["window"] == drift.DEFAULT_WINDOW
    assert set(reference["features"]) == {"slope_per_um", "reflectance_0.45um", "reflectance_0.70um",
                                          "reflectance_0.90um", "coverage_fraction", "min_wavelength_um",
                                          "max_wavelength_um"}
    for name, f in reference["features"].items():
        assert len(f["fractions"]) == len(f["edges"]) + 1 and sum(f["fractions"]) == pytest.approx(1)
        assert f["edges"] == sorted(f["edges"])
        if name.startswith(("reflectance", "slope")):  # continuous: ten equally filled bins
            assert len(f["edges"]) == 9 and max(abs(x - 0.1) for x in f["fractions"]) < 0.01
    # SMASSII spectra nearly all cover the whole grid: coverage has one edge (at 1.0).
    assert reference["features"]["coverage_fraction"]["edges"] == [1.0]
    assert reference["classes"]["names"] == ["C", "S", "X"]
    assert sum(reference["classes"]["fractions"]) == pytest.approx(1)


# -- the monitor: window, threshold, gauges -----------------------------------------------------------
def gauge(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def feed(monitor: DriftMonitor, records: list[dict[str, Any]], label: Callable[[dict], str] = stand_in_label) -> None:
    for r in records:
        monitor.observe(r, label(r))


def test_no_value_before_the_window_minimum(reference: dict[str, Any], populations: dict) -> None:
    live = populations["live"]
    for window, minimum in ((500, 100), (100, 50), (1000, 200)):
        task = f"t-minimum-{window}"
        monitor = DriftMonitor(task, dict(reference, window=window))
        feed(monitor, live[:minimum - 1])
        assert monitor.values() == {}
        monitor.export()
        assert gauge("skystream_drift_detected", task=task) is None  # no decision without evidence
        assert gauge("skystream_drift_psi", task=task, feature="slope_per_um") is None
        feed(monitor, live[minimum - 1:minimum])
        assert set(monitor.values()) == set(reference["features"]) | {PREDICTED_CLASS}


def test_unshifted_population_stays_below_threshold(reference: dict[str, Any], populations: dict) -> None:
    monitor = DriftMonitor("t-unshifted", reference)
    feed(monitor, populations["live"][:500])
    values = monitor.export()
    assert max(values.values()) < 0.1, values  # "stable" on the conventional scale
    assert gauge("skystream_drift_detected", task="t-unshifted") == 0.0


def test_shifted_population_flags_drift_and_exports_gauges(reference: dict[str, Any], populations: dict) -> None:
    monitor = DriftMonitor("t-shifted", reference)
    feed(monitor, populations["shifted"][:500])  # observe() exports every 50 observations by itself
    psi_of = {f: gauge("skystream_drift_psi", task="t-shifted", feature=f) for f in reference["features"]}
    # The cut moves the quality figures (SMASSII ends at 0.925 µm, the cut at 0.92) and the blue end
    # (held flat below 0.49 µm), not the spectrum's shape further red.
    assert psi_of["coverage_fraction"] > 1 and psi_of["min_wavelength_um"] > 1 and psi_of["max_wavelength_um"] > 1
    assert psi_of["reflectance_0.45um"] > drift.DEFAULT_THRESHOLD
    assert psi_of["reflectance_0.70um"] < 0.1 and psi_of["reflectance_0.90um"] < 0.1
    assert gauge("skystream_drift_detected", task="t-shifted") == 1.0


def test_unshifted_population_never_raises_the_flag_while_the_window_fills(
        reference: dict[str, Any], populations: dict) -> None:
    """Real spectra in many random orders, checked after every export (every 50 observations): the flag
    must never go up. PSI of n draws of the reference population itself is ~(bins - 1)/n on each
    feature, so a decision on the first 100 observations is a coin that lands on "drift" several
    percent of the time; over a full window of 500 it never does."""
    live = populations["live"]
    # The summaries are computed once here (spectrum_summary is tested above): 20,000 observations
    # then cost only the monitor's own work.
    summaries = {id(r): drift.spectrum_summary(r) for r in live}
    labels = [stand_in_label(r) for r in live]
    raised = []
    for seed in range(40):
        task = f"t-ramp-{seed}"
        monitor = DriftMonitor(task, reference)
        monitor.summarise = lambda record: summaries[id(record)]
        order = np.random.default_rng(seed).permutation(len(live))[:monitor.window]
        for n, i in enumerate(order, start=1):
            monitor.observe(live[i], labels[i])
            if n % 50 == 0 and gauge("skystream_drift_detected", task=task) == 1.0:
                raised.append((seed, n, {k: round(v, 2) for k, v in monitor.values().items() if v > 0.25}))
                break
    assert not raised, f"drift flagged on the unshifted population (seed, observations, PSI > 0.25): {raised}"


def test_window_slides_back_to_no_drift(reference: dict[str, Any], populations: dict) -> None:
    monitor = DriftMonitor("t-slide", dict(reference, window=200))
    feed(monitor, populations["shifted"][:200])
    assert gauge("skystream_drift_detected", task="t-slide") == 1.0
    feed(monitor, populations["live"][:150])  # 50 shifted left in the window of 200: still drifted
    assert monitor.values()["coverage_fraction"] > drift.DEFAULT_THRESHOLD
    feed(monitor, populations["live"][150:200])  # the shifted observations have all left the window
    assert max(monitor.export().values()) < drift.DEFAULT_THRESHOLD
    assert gauge("skystream_drift_detected", task="t-slide") == 0.0


def test_threshold_comes_from_the_reference_and_is_strict(reference: dict[str, Any], populations: dict) -> None:
    shifted = populations["shifted"][:300]
    lenient = DriftMonitor("t-lenient", dict(reference, threshold=1000.0, window=300))
    feed(lenient, shifted)
    assert lenient.export()["coverage_fraction"] > 1
    assert gauge("skystream_drift_detected", task="t-lenient") == 0.0
    values = lenient.values()
    at_max = DriftMonitor("t-at-max", dict(reference, threshold=max(values.values()), window=300))
    feed(at_max, shifted)
    at_max.export()
    assert gauge("skystream_drift_detected", task="t-at-max") == 0.0  # equal to the threshold: not above


def test_predicted_class_mix_alone_can_drift(reference: dict[str, Any], populations: dict) -> None:
    monitor = DriftMonitor("t-classes", dict(reference, window=300))
    feed(monitor, populations["live"][:300], label=lambda r: "X")  # inputs as usual, every answer X
    values = monitor.export()
    assert values[PREDICTED_CLASS] > 1
    assert max(v for k, v in values.items() if k != PREDICTED_CLASS) < 0.1
    assert gauge("skystream_drift_detected", task="t-classes") == 1.0
    # Labels the reference does not know are not counted (they cannot be compared).
    other = DriftMonitor("t-unknown-label", reference)
    feed(other, populations["live"][:300], label=lambda r: "not-a-class")
    assert PREDICTED_CLASS not in other.values()


# -- demonstration on the running stream --------------------------------------------------------------
def scrape(port: int, name: str, **labels: str) -> float | None:
    """One sample from a process's /metrics (None when absent or unreachable)."""
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    except OSError:
        return None
    values = [s.value for fam in text_string_to_metric_families(text) for s in fam.samples
              if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]
    return sum(values) if values else None


def watch_once(stack: LocalStack, directory: Path) -> None:
    subprocess.run([sys.executable, "-m", "stream.cli", "watch", str(directory), "--once", "--settle", "0",
                    "--metrics-port", "0"], env=stack.env(), check=True, capture_output=True, timeout=120)


@pytest.mark.slow
def test_drift_alert_fires_for_a_shifted_population_only(tmp_path: Path, smass_dir: Path) -> None:
    """600 real spectra: the drift flag stays 0 and no drift alert fires. Then 300 of them as a
    0.49-0.92 µm survey: the PSI gauges pass 0.25 and SkyStreamDriftDetected fires in Prometheus."""
    if not shutil.which("prometheus"):
        pytest.skip("prometheus is not installed (Debian: apt-get install prometheus)")
    if not (BUNDLED / "smass").is_dir():
        pytest.skip(f"no bundled SMASS model at {BUNDLED / 'smass'} yet")
    registry = tmp_path / "registry"
    shutil.copytree(BUNDLED, registry)
    meta = json.loads((registry / "smass" / json.loads((registry / "smass" / "champion.json").read_text())["version"]
                       / "metadata.json").read_text())
    ref = meta["drift_reference"]
    window, threshold = int(ref["window"]), float(ref["threshold"])
    n_unshifted, n_shifted = window + 100, 300  # a full window of the real population, then a shift

    # One partition: the worker observes the files in the order the watcher publishes them (sorted
    # names), so the window holds a seeded random sample of the population, not one biased by name.
    files = sorted(smass_dir.iterdir())
    order = [files[i] for i in np.random.default_rng(7).permutation(len(files))[:n_unshifted]]
    unshifted, shifted = tmp_path / "unshifted", tmp_path / "shifted"
    unshifted.mkdir()
    shifted.mkdir()
    for i, f in enumerate(order):
        shutil.copy(f, unshifted / f"{i:04d}_{f.name}")
    for i, f in enumerate(order[:n_shifted]):
        (shifted / f"{i:04d}_{f.name}").write_bytes(cut_table(f.read_bytes(), *SHIFT_RANGE_UM))

    local_prometheus = load_module(ROOT / "deploy" / "prometheus" / "local_prometheus.py")
    with LocalStack(state_dir=tmp_path / "state", registry=str(registry), partitions=1) as stack:
        stack.start_worker()
        port = stack.worker_metrics_ports[0]
        wait_until(lambda: scrape(port, "skystream_assigned_partitions", topic="skystream.files"), 120,
                   "the worker to join")
        with local_prometheus.LocalPrometheus([], [f"127.0.0.1:{port}"], workdir=tmp_path / "prometheus",
                                              interval="1s", alert_for="0s") as prom:
            prom.wait_for(lambda: prom.value('up{job="skystream-worker"}') == 1, 60, "the first scrape")
            t0 = time.time()
            watch_once(stack, unshifted)
            got = asyncio.run(collect(stack.broker, lambda c: len(c.predictions) >= n_unshifted, 120))
            assert len(got.predictions) == n_unshifted
            # observe() exports every 50 observations; n_unshifted is a multiple of 50.
            wait_until(lambda: scrape(port, "skystream_drift_psi", task="smass", feature="slope_per_um") is not None,
                       30, "the drift gauges")
            before = psi_in_prometheus(prom)
            span = f"{max(5, int(time.time() - t0) + 2)}s"
            assert prom.value(f'max_over_time(skystream_drift_detected{{task="smass"}}[{span}])') == 0.0
            assert not prom.query(f'max_over_time(ALERTS{{alertname=~"SkyStream(Feature)?Drift.*"}}[{span}])')
            assert max(before.values()) < threshold, before

            t_shift = time.time()
            watch_once(stack, shifted)
            firing = prom.wait_for(
                lambda: [a for a in prom.alerts("firing") if a["labels"]["alertname"] == "SkyStreamDriftDetected"],
                60, "SkyStreamDriftDetected to fire")
            seen_firing_after = time.time() - t_shift
            active_after = parse_rfc3339(firing[0]["activeAt"]) - t_shift
            got = asyncio.run(collect(stack.broker, lambda c: len(c.outcomes()) >= n_unshifted + n_shifted, 120))
            assert len(got.outcomes()) == n_unshifted + n_shifted
            n_scored = len(got.predictions) - n_unshifted
            after = psi_in_prometheus(prom)
            feature_alerts = prom.wait_for(
                lambda: (f := firing_features(prom)) >= {"coverage_fraction", "min_wavelength_um"} and f, 30,
                "SkyStreamFeatureDrift for the coverage features")

    print(f"\nPSI after {n_unshifted} unshifted spectra: " + json.dumps({k: round(v, 3) for k, v in before.items()}))
    print(f"PSI after {n_scored} shifted spectra scored ({n_shifted - n_scored} rejected): "
          + json.dumps({k: round(v, 3) for k, v in after.items()}))
    print(f"SkyStreamDriftDetected active {active_after:.1f} s (seen firing {seen_firing_after:.1f} s) after the "
          f"shifted files were handed to the watcher; SkyStreamFeatureDrift for {sorted(feature_alerts)}")
    assert firing[0]["labels"]["task"] == "smass" and firing[0]["labels"]["severity"] == "warning"
    assert after["coverage_fraction"] > threshold and after["min_wavelength_um"] > threshold


def psi_in_prometheus(prom: Any) -> dict[str, float]:
    """skystream_drift_psi{task="smass"} per feature, from a scrape taken after this call began."""
    t = time.time()
    prom.wait_for(lambda: prom.query(f'timestamp(up{{job="skystream-worker"}}) > {t:.3f}'), 30, "a fresh scrape")
    return {r["metric"]["feature"]: float(r["value"][1]) for r in prom.query('skystream_drift_psi{task="smass"}')}


def firing_features(prom: Any) -> set[str]:
    alerts = prom.alerts("firing")
    return {a["labels"]["feature"] for a in alerts if a["labels"]["alertname"] == "SkyStreamFeatureDrift"}


def parse_rfc3339(text: str) -> float:
    """Prometheus's activeAt (RFC 3339, nanoseconds) as unix time."""
    from datetime import datetime

    head, _, frac = text.rstrip("Z").partition(".")
    return datetime.fromisoformat(head + "+00:00").timestamp() + float(f"0.{frac or 0}")
