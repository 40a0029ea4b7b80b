"""`skystream api`: the REST API and the web view over a real archive and the bundled registry.

The archive is written by the archive's own writer from real scored records: the TESS light curves
of WASP-126 (TIC 25155310, sectors 1 and 6, each alerted with its diagnostic figure) and three
SMASSII spectra ((4) Vesta raises a rare-composition alert). The server runs on loopback; the pages
are loaded in headless Chromium (skipped where it is not installed: deploy/local/setup.sh full).
"""

from __future__ import annotations

import asyncio
import dataclasses
import html.parser
import io
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

import pytest
from aiohttp import web
from data_paths import require_data
from helpers import predict_file

from stream.alerts.filters import matches, parse_filter
from stream.alerts.policy import alerts_for
from stream.api import pages, queries
from stream.api.app import create_app
from stream.api.openapi import OPENAPI
from stream.archive import query
from stream.archive.writer import day_of, to_row, write_batch
from stream.models.registry import BUNDLED
from stream.scoring.scorer import scorer_for
from stream.settings import Settings

WASP126 = ["hlsp_tess-data-alerts_tess_phot_00025155310-s01_tess_v1_lc.fits", "tic25155310_s06_lc.fits"]
SPECTRA = ["a000004.[2]", "a000010.[2]", "au1996UK.[2]"]
PNG = b"\x89PNG\r\n\x1a\n"
TOKEN = "test-api-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory, smass_dir: Path) -> Path:
    d = tmp_path_factory.mktemp("inputs")
    for name in WASP126:
        shutil.copy(require_data("tess/lc") / name, d / name)
    for name in SPECTRA:
        shutil.copy(smass_dir / name, d / name)
    return d


@pytest.fixture(scope="module")
def archived(tmp_path_factory: pytest.TempPathFactory, inputs: Path) -> Settings:
    """Settings whose archive holds the real predictions and alerts of ``inputs``, one file per record."""
    # The alert policy reads each light curve again for its figure: only under the configured sources.
    settings = Settings(registry=str(BUNDLED), archive=str(tmp_path_factory.mktemp("archive")), sources=str(inputs))
    scorer = scorer_for(settings)
    offset = 0
    for path in sorted(inputs.iterdir()):
        now = int(time.time() * 1000)
        kind, prediction = predict_file(path, scorer, now)
        for table, record in [("predictions", prediction)] + [("alerts", a) for a in alerts_for(prediction, settings)]:
            write_batch(settings.archive, table, kind, day_of(now), [to_row(table, record, 0, offset, now + offset)],
                        settings)
            offset += 1
    return settings


@contextmanager
def serving(settings: Settings,
            on_response: Callable[[web.Request, web.StreamResponse], Awaitable[None]] | None = None) -> Iterator[str]:
    """The application on a free loopback port, in a thread with its own event loop; yields its URL.
    ``on_response`` sees every answer before it is sent."""
    loop = asyncio.new_event_loop()
    started = threading.Event()
    box: dict = {}

    def main() -> None:
        asyncio.set_event_loop(loop)
        app = create_app(settings)
        if on_response is not None:
            app.on_response_prepare.append(on_response)
        runner = web.AppRunner(app)
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", 0).start())
        box["port"] = runner.addresses[0][1]
        started.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())

    thread = threading.Thread(target=main, daemon=True)
    thread.start()
    assert started.wait(120), "the server did not start"
    try:
        yield f"http://127.0.0.1:{box['port']}"
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(60)


@pytest.fixture(scope="module")
def server(archived: Settings) -> Iterator[str]:
    """The server with a token (POST /score needs it) and open reads."""
    with serving(dataclasses.replace(archived, api_token=TOKEN)) as url:
        yield url


def fetch(url: str, data: bytes | None = None, headers: dict | None = None, method: str | None = None
          ) -> tuple[int, str, bytes]:
    """(status, content type, body) of one request; 4xx/5xx answers are returned, not raised."""
    req = urllib.request.Request(url, data=data, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=300) as resp:
            return resp.status, resp.headers.get_content_type(), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get_content_type(), exc.read()


def get_json(url: str) -> tuple[int, dict]:
    status, ctype, body = fetch(url)
    assert ctype == "application/json", (status, ctype, body[:200])
    return status, json.loads(body)


def multipart(filename: str, content: bytes) -> tuple[bytes, dict]:
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode() + content + f"\r\n--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def cli_score(path: Path, settings: Settings) -> str:
    out = subprocess.run([sys.executable, "-m", "stream.cli", "score", str(path), "--registry", settings.registry],
                         check=True, capture_output=True, text=True, timeout=600).stdout
    (line,) = out.splitlines()
    return line


# -- POST /score --------------------------------------------------------------------------------------
def test_score_gives_the_prediction_of_skystream_score(server: str, archived: Settings, inputs: Path) -> None:
    spectrum, curve = inputs / "a000004.[2]", inputs / WASP126[0]
    body, headers = multipart(spectrum.name, spectrum.read_bytes())
    status, ctype, answer = fetch(server + "/score", body, headers | AUTH)
    assert status == 200 and ctype == "application/json", answer[:300]
    # Byte for byte the line `skystream score` prints, but for `source`: the upload's name, not a path.
    expected = cli_score(spectrum, archived)
    assert json.loads(answer)["source"] == "upload://a000004.[2]"
    assert answer.decode().replace('"upload://a000004.[2]"', json.dumps(str(spectrum.resolve()))) == expected
    assert json.loads(answer)["main_group"] == "Other" and json.loads(answer)["object"] == "4"

    # A light curve as a raw body, named by ?name=.
    status, _, answer = fetch(f"{server}/score?name={quote(curve.name)}", curve.read_bytes(),
                              {"Content-Type": "application/octet-stream"} | AUTH)
    assert status == 200, answer[:300]
    expected = cli_score(curve, archived)
    assert answer.decode().replace(json.dumps(f"upload://{curve.name}"), json.dumps(str(curve.resolve()))) == expected
    assert abs(max(json.loads(answer)["signals"], key=lambda s: s["snr"])["period_days"] - 3.2888) < 0.02


def test_score_refuses_bad_uploads_with_the_reason(server: str, inputs: Path) -> None:
    for content, reason in [(b"", "empty-file"), (bytes(range(256)) * 16, "binary-content")]:
        status, ctype, answer = fetch(server + "/score?name=bad.txt", content, AUTH)
        assert (status, ctype) == (422, "application/json"), answer[:300]
        assert json.loads(answer) == {"source": "upload://bad.txt", "rejected": True, "reason": reason,
                                      "error": json.loads(answer)["error"]}
    # The name only names the upload: Vesta's bytes sent as another asteroid's path are scored as sent,
    # that path is never read, and nothing of it but its last segment is kept.
    body, headers = multipart("/../../etc/a000010.[2]", (inputs / "a000004.[2]").read_bytes())
    status, _, answer = fetch(server + "/score", body, headers | AUTH)
    result = json.loads(answer)
    assert status == 200 and result["source"] == "upload://a000010.[2]" and result["main_group"] == "Other"
    body, headers = multipart("a.txt", b"")
    status, _, answer = fetch(server + "/score", body.replace(b'name="file"; ', b'name="other"; ').replace(
        b'; filename="a.txt"', b""), headers | AUTH)
    assert status == 400 and "no file" in json.loads(answer)["error"]
    # A malformed form (a part header that is not one) is the client's error, not the server's.
    broken = body.replace(b"Content-Disposition: form-data", b"Content-Disposition: form-data\x01\xff")
    status, _, answer = fetch(server + "/score", broken, headers | AUTH)
    assert status == 400 and "multipart" in json.loads(answer)["error"], answer
    req = urllib.request.Request(server + "/score")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(req, timeout=60)
    assert refused.value.code == 405 and refused.value.headers["Allow"] == "POST", refused.value.headers
    assert refused.value.headers.get_content_type() == "application/json" and json.loads(refused.value.read())["error"]


def test_score_enforces_each_kinds_size_limit(archived: Settings, inputs: Path) -> None:
    small = dataclasses.replace(archived, max_spectrum_bytes=1000, max_lightcurve_bytes=200_000, api_token=TOKEN)
    spectrum = (inputs / "a000004.[2]").read_bytes()
    with serving(small) as url:
        status, _, answer = fetch(url + "/score?name=a000004.[2]", spectrum, AUTH)
        assert status == 413 and json.loads(answer)["reason"] == "too-large", answer[:300]
        assert "1000 bytes" in json.loads(answer)["error"]
        # Beyond every kind's limit the body is not even read whole.
        status, ctype, answer = fetch(url + "/score", b"x" * 600_000, AUTH)
        assert (status, ctype) == (413, "application/json") and "200000" in json.loads(answer)["error"]


# -- GET /alerts, /objects, /models --------------------------------------------------------------------
def test_alerts_are_filtered_like_the_filter_language(server: str, archived: Settings) -> None:
    status, everything = get_json(server + "/alerts")
    assert status == 200 and everything["count"] == 3
    assert {(a["object"], a["reason"]) for a in everything["alerts"]} == {
        ("TIC 25155310", "known-planet-candidate"), ("4", "rare-composition")}
    published = [a["published_at_ms"] for a in everything["alerts"]]
    assert published == sorted(published, reverse=True), "newest first"
    archive = query.alerts(settings=archived)
    for params, spec in [("kind=lightcurve", {"kind": "lightcurve"}), ("reason=rare-composition",
                         {"reason": "rare-composition"}), ("min_score=0.99", {"min": {"score": 0.99}}),
                         ("object=tic%2025155310", {"object": "TIC 25155310"}),
                         ("kind=spectrum,lightcurve&min_score=0.86", {"min": {"score": 0.86}}),
                         ("cone=63.374,-69.227,2", {"cone": {"ra": 63.374, "dec": -69.227, "radius_deg": 2}})]:
        _, found = get_json(f"{server}/alerts?{params}")
        expected = {a["alert_id"] for a in archive if matches(parse_filter("x", spec), a)}
        assert {a["alert_id"] for a in found["alerts"]} == expected and expected, params
    _, found = get_json(server + "/alerts?since=1h&limit=1")
    assert [a["alert_id"] for a in found["alerts"]] == [everything["alerts"][0]["alert_id"]]
    _, found = get_json(server + "/alerts?since=2000-01-01T00:00:00Z")
    assert found["count"] == 3
    for bad, word in [("min_score=high", "min_score"), ("cone=1,2", "cone"), ("limit=0", "limit"),
                      ("since=yesterday", "since"), ("cone=400,0,1", "cone")]:
        status, answer = get_json(f"{server}/alerts?{bad}")
        assert status == 400 and word in answer["error"], (bad, answer)

    figured = [a for a in everything["alerts"] if a["kind"] == "lightcurve"]
    assert all(a["figure_url"] for a in figured) and all("figure_png" not in a for a in everything["alerts"])
    status, ctype, png = fetch(server + figured[0]["figure_url"])
    assert (status, ctype) == (200, "image/png") and png.startswith(PNG)
    status, _ = get_json(server + "/alerts/" + "0" * 64 + "/figure.png")
    assert status == 404
    status, _ = get_json(server + "/alerts/not-an-id/figure.png")
    assert status == 400


def test_object_history_and_models(server: str) -> None:
    status, found = get_json(server + "/objects/" + quote("TIC 25155310"))
    assert status == 200 and [p["sector"] for p in found["predictions"]] == [1, 6]
    assert len(found["alerts"]) == 2 and all(a["figure_url"] for a in found["alerts"])
    assert get_json(server + "/objects/25155310")[1]["predictions"] == found["predictions"]
    _, vesta = get_json(server + "/objects/4")
    assert [p["main_group"] for p in vesta["predictions"]] == ["Other"]
    status, answer = get_json(server + "/objects/" + quote("TIC 1"))
    assert status == 404 and "TIC 1" in answer["error"]
    status, answer = get_json(server + "/objects/" + quote("<script>"))
    assert status == 400 and "object" in answer["error"]

    status, registry = get_json(server + "/models")
    by_task = {m["task"]: m for m in registry["models"]}
    assert status == 200 and set(by_task) == {"smass", "tess"}
    # Issue 13 shipped smass v2 (coverage-mask recipe), issue 17 v3 (v2 + novelty head) as champion; all listed.
    assert by_task["smass"]["champion"] == "3" and by_task["smass"]["history"] == ["1", "2", "3"]
    v1, v2, v3 = by_task["smass"]["versions"]
    assert v3["metrics"]["cv"] == v2["metrics"]["cv"]  # the same classifier
    assert v3["metrics"]["novelty"]["smassii_holdout"]["alpha_0.01"] < 0.03
    assert v1["metrics"]["cv"]["main_group"]["weighted_f1_pooled"] > 0.96
    assert v2["metrics"]["cv"]["main_group"]["weighted_f1_pooled"] > 0.955
    assert v2["metrics"]["smass1"]["weighted_f1"] > 0.85  # SMASS I; v1 gets 0.808 (bench_cross_survey.py --version 1)
    assert by_task["tess"]["versions"][0]["metrics"]["val"]["triage_average_precision"] > 0.97
    assert get_json(server + "/healthz") == (200, {"status": "ok"})


def test_openapi_describes_exactly_the_api_routes(server: str, archived: Settings) -> None:
    status, spec = get_json(server + "/openapi.json")
    assert status == 200 and spec == json.loads(json.dumps(OPENAPI)) and spec["openapi"].startswith("3.")
    app = create_app(archived)
    routes = {(r.method.lower(), r.resource.canonical) for r in app.router.routes()
              if r.method != "HEAD" and not r.resource.canonical.startswith(("/ui/", "/static"))
              and r.resource.canonical != "/"}
    described = {(method, path) for path, ops in spec["paths"].items() for method in ops}
    assert routes == described


def test_errors_are_json_without_tracebacks(server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    status, answer = get_json(server + "/nothing-here")
    assert status == 404 and answer["error"]

    def broken(*args, **kwargs):
        raise RuntimeError("secret detail /srv/archive")

    monkeypatch.setattr(queries, "list_alerts", broken)
    status, ctype, body = fetch(server + "/alerts")
    assert (status, ctype) == (500, "application/json")
    assert b"Traceback" not in body and b"secret" not in body and json.loads(body)["error"]


# -- the web view --------------------------------------------------------------------------------------
class _Page(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.articles = 0
        self.links: list[str] = []
        self.external: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        a = dict(attrs)
        if tag == "img":
            self.images.append(a["src"])
        if tag == "article":
            self.articles += 1
        for key in ("src", "href"):
            if a.get(key, "").startswith(("http:", "https:", "//")):
                self.external.append(a[key])
        if tag == "a":
            self.links.append(a.get("href", ""))


def page(url: str) -> _Page:
    status, ctype, body = fetch(url)
    assert (status, ctype) == (200, "text/html"), (url, status, body[:300])
    parsed = _Page()
    parsed.feed(body.decode())
    assert not parsed.external, f"{url} loads something from elsewhere: {parsed.external}"
    return parsed


def assert_pngs(server: str, sources: list[str]) -> None:
    from PIL import Image

    for src in sources:
        status, ctype, body = fetch(server + src)
        assert (status, ctype) == (200, "image/png") and body.startswith(PNG), src
        width, height = Image.open(io.BytesIO(body)).size
        assert width > 100 and height > 50, src


def test_pages_show_alerts_objects_and_models(server: str) -> None:
    alerts = page(server + "/")
    assert alerts.articles == 3 and len(alerts.images) == 2
    assert_pngs(server, alerts.images)
    assert "/ui/objects/TIC%2025155310" in alerts.links
    assert page(server + "/?kind=lightcurve&min_score=").articles == 2
    assert page(server + "/?reason=rare-composition").articles == 1
    status, ctype, body = fetch(server + "/?min_score=lots")
    assert (status, ctype) == (400, "text/html") and b"min_score" in body

    star = page(server + "/ui/objects/TIC%2025155310")
    folds = [src for src in star.images if "/signals/" in src]
    # Periods over sectors, each signal of each sector folded (sector 1: WASP-126 b and a weaker one;
    # sector 6: WASP-126 b), and each sector's alert figure.
    assert len(folds) == 3 and len(star.images) == 1 + 3 + 2
    assert sum(f"#fold-{src.split('/')[-2][:16]}-{src.split('/')[-1][:-4]}" in star.links for src in folds) == 3
    assert_pngs(server, star.images)
    status, _, body = fetch(server + folds[0].rsplit("/", 1)[0] + "/7.png")
    assert status == 404 and b"has no signal 7" in body
    status, _, _ = fetch(server + "/ui/objects/TIC%2025155310/signals/" + "0" * 64 + "/0.png")
    assert status == 404
    vesta = page(server + "/ui/objects/4")
    assert len(vesta.images) == 1
    assert_pngs(server, vesta.images)
    models = page(server + "/ui/models")
    assert len(models.images) >= 4  # smass: confusion matrix, per-class scores, novelty; tess: training history
    assert any("/smass/3/novelty-" in src for src in models.images)  # the champion's novelty findings
    assert_pngs(server, models.images)
    status, _, body = fetch(server + "/ui/objects/nobody")
    assert status == 404 and b"Nothing archived" in body


def test_pages_escape_every_value() -> None:
    evil = {"alert_id": "a" * 64, "kind": "spectrum", "object": "<script>alert(1)</script>", "reason": "r",
            "score": 0.5, "summary": "<img src=x onerror=alert(1)>", "model": "m", "model_version": "1",
            "figure_url": None, "main_group": "Other", "bus_class": "V", "bus_probability": 0.9}
    text = pages.alerts_page([evil], {"object": '"><script>'}, kinds=["spectrum"], reasons=["r"])
    assert "<script>" not in text and "<img src=x" not in text and "&lt;script&gt;" in text


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(_chromium() is None, reason="headless Chromium not installed (deploy/local/setup.sh full)")
@pytest.mark.parametrize("path", ["/", "/ui/objects/TIC%2025155310", "/ui/models"])
def test_pages_render_in_headless_chromium(server: str, path: str, tmp_path: Path) -> None:
    from PIL import Image, ImageStat

    shot = tmp_path / "page.png"
    subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,1600", f"--screenshot={shot}",
                    server + path], check=True, capture_output=True, timeout=180)
    image = Image.open(shot).convert("RGB")
    assert image.size == (1280, 1600)
    # Not blank: text, tables and the figures give many colours and a wide spread of brightness.
    assert max(ImageStat.Stat(image).stddev) > 20
    assert len(image.getcolors(maxcolors=1 << 20) or []) > 200


@pytest.mark.slow
def test_demo_tells_where_to_look_and_serves_its_archive(tmp_path: Path, smass_dir: Path) -> None:
    import signal

    from helpers import wait_until

    from stream.runtime.embedded_broker import free_port

    source = tmp_path / "in"
    source.mkdir()
    for name in SPECTRA:
        shutil.copy(smass_dir / name, source / name)
    port = free_port()
    root = str(Path(__file__).parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]),
           "SKYSTREAM_BROKER": ""}
    demo = subprocess.Popen([sys.executable, "-m", "stream.cli", "demo", "--source", str(source), "--quiet",
                             "--serve", str(port)], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        def alerts() -> dict | None:
            try:
                status, ctype, body = fetch(f"http://127.0.0.1:{port}/alerts")
            except OSError:
                return None
            return json.loads(body) if status == 200 else None

        found = wait_until(alerts, 400, "the demo's web server", interval=1.0)
        assert [(a["object"], a["reason"]) for a in found["alerts"]] == [("4", "rare-composition")]
        assert page(f"http://127.0.0.1:{port}/ui/objects/4").images
    finally:
        demo.send_signal(signal.SIGINT)
        out, _ = demo.communicate(timeout=120)
    assert demo.returncode == 0, out[-2000:]
    assert "skystream alerts --archive" in out and "skystream history --archive" in out
    assert f"http://127.0.0.1:{port}/" in out


def test_history_lists_a_stars_signals_and_draws_each_folded(archived: Settings, tmp_path: Path) -> None:
    env = {**os.environ, "SKYSTREAM_ARCHIVE": archived.archive, "SKYSTREAM_SOURCES": archived.sources,
           "SKYSTREAM_BROKER": ""}
    run = [sys.executable, "-m", "stream.cli", "history", "TIC 25155310", "--signals", "--figures", str(tmp_path)]
    done = subprocess.run(run, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = [line.split() for line in done.stdout.splitlines() if line.startswith("TIC 25155310")]
    # object (2 words), sector, signal number, period, epoch, ...
    assert [(row[2], row[3]) for row in lines] == [("1", "1"), ("1", "2"), ("6", "1")]
    assert all(row[4].startswith("3.28") for row in lines if row[3] == "1")
    assert "TOI-114.01" in done.stdout
    figures = sorted(p.name for p in tmp_path.glob("*.png"))
    assert figures == ["TIC25155310_s01_1_v1.png", "TIC25155310_s01_2_v1.png", "TIC25155310_s06_1_v1.png"]
    assert all((tmp_path / name).read_bytes().startswith(PNG) for name in figures)

    # The file gone from the sources: the listing still works, the figures say why they are missing.
    elsewhere = {**env, "SKYSTREAM_SOURCES": str(tmp_path / "nowhere")}
    done = subprocess.run(run[:-2] + ["--figures", str(tmp_path / "again")], env=elsewhere, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 1 and done.stdout.count("TIC 25155310") == 3
    assert "outside-sources" in done.stderr or "not under the configured sources" in done.stderr
