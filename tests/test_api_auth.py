"""Access to `skystream api`: the bearer token for POST /score (and for the reads when protected), no scoring
without a token, no listening beyond loopback without one, and the token kept out of logs, reprs and answers.

The servers run on loopback over an empty archive and the bundled registry (tests/test_api.py and
tests/test_api_contract.py serve real content); `skystream api` itself runs as a child process.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from test_api import fetch, serving

from stream.api import queries
from stream.api.app import check_access, create_app, is_loopback
from stream.models.registry import BUNDLED
from stream.settings import Settings

TOKEN = "auth-test-token-7d1e0c9b5a3f2e"
ROOT = Path(__file__).parents[1]


@pytest.fixture()
def settings(tmp_path: Path) -> Settings:
    return Settings(registry=str(BUNDLED), archive=str(tmp_path / "archive"))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def answer(url: str, data: bytes | None = None, headers: dict | None = None, method: str | None = None
           ) -> tuple[int, dict, bytes]:
    """(status, headers, body) of one request; 4xx/5xx answers are returned, not raised."""
    req = urllib.request.Request(url, data=data, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def test_score_needs_the_token_and_reads_stay_open(settings: Settings) -> None:
    with serving(dataclasses.replace(settings, api_token=TOKEN)) as url:
        for headers in [{}, bearer("not-the-token-at-all-000"), bearer(TOKEN + "x"), bearer(TOKEN[:-1]),
                        {"Authorization": f"Basic {TOKEN}"}, {"Authorization": TOKEN}]:
            status, got, body = answer(url + "/score?name=a.txt", b"x", headers)
            assert status == 401 and got["WWW-Authenticate"].startswith("Bearer"), (headers, status, got)
            assert "Bearer <token>" in json.loads(body)["error"]
            assert TOKEN.encode() not in body and TOKEN not in json.dumps(got)
        assert 'error="invalid_token"' in answer(url + "/score", b"x", bearer("wrong-token-00000000"))[1][
            "WWW-Authenticate"]
        # With the token the upload is scored (and refused for what it is: empty).
        for scheme in ("Bearer", "bearer"):
            status, _, body = answer(url + "/score?name=a.txt", b"", {"Authorization": f"{scheme} {TOKEN}"})
            assert status == 422 and json.loads(body)["reason"] == "empty-file", body
        for path in ("/alerts", "/models", "/healthz", "/", "/ui/models", "/openapi.json"):
            assert fetch(url + path)[0] == 200, path
        spec = json.loads(fetch(url + "/openapi.json")[2])
        assert spec["paths"]["/score"]["post"]["security"] == [{"bearer": []}]
        assert spec["paths"]["/alerts"]["get"]["security"] == []
        assert spec["components"]["securitySchemes"]["bearer"] == {**spec["components"]["securitySchemes"][
            "bearer"], "type": "http", "scheme": "bearer"}


def test_without_a_token_scoring_is_refused_and_reads_work(settings: Settings) -> None:
    with serving(settings) as url:
        for headers in [{}, bearer(TOKEN)]:
            status, _, body = answer(url + "/score", b"x", headers)
            assert status == 403 and "SKYSTREAM_API_TOKEN" in json.loads(body)["error"], body
            assert "--token-file" in json.loads(body)["error"]
        assert fetch(url + "/alerts")[0] == 200 and fetch(url + "/healthz")[0] == 200
        assert fetch(url + "/")[0] == 200


def test_protected_reads_need_the_token_but_health_and_description(settings: Settings) -> None:
    with serving(dataclasses.replace(settings, api_token=TOKEN, api_protect_reads=True)) as url:
        for path in ("/alerts", "/models", "/objects/4", "/alerts/" + "0" * 64 + "/figure.png", "/", "/ui/models",
                     "/ui/objects/4", "/ui/models/smass/1/confusion-0.png"):
            status, got, body = answer(url + path)
            assert status == 401 and got["WWW-Authenticate"].startswith("Bearer"), (path, status)
            assert got["Content-Type"].startswith("text/html" if path == "/" or path.startswith("/ui/")
                                                  else "application/json"), (path, got)
            assert answer(url + path, headers=bearer(TOKEN))[0] in (200, 404), path
        for path in ("/healthz", "/openapi.json", "/static/style.css"):
            assert answer(url + path)[0] == 200, path
        spec = json.loads(answer(url + "/openapi.json")[2])
        assert spec["paths"]["/alerts"]["get"]["security"] == [{"bearer": []}]
        assert "401" in spec["paths"]["/models"]["get"]["responses"]
        assert spec["paths"]["/healthz"]["get"]["security"] == []
        # An unknown route is not found, an unknown method not allowed (with what is), token or not.
        assert answer(url + "/nothing-here")[0] == 404
        status, got, _ = answer(url + "/models", method="DELETE")
        assert status == 405 and set(got["Allow"].split(",")) == {"GET", "HEAD"}


def test_access_settings_that_must_not_serve(settings: Settings) -> None:
    for host in ("127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost", "LOCALHOST"):
        assert is_loopback(host), host
        check_access(settings, host)
    for host in ("0.0.0.0", "::", "", "192.168.1.10", "10.0.0.1", "example.org", "localhost.example.org"):
        assert not is_loopback(host), host
        with pytest.raises(ValueError, match="SKYSTREAM_API_TOKEN"):
            check_access(settings, host)
        check_access(dataclasses.replace(settings, api_token=TOKEN), host)
    with pytest.raises(ValueError, match="no token"):
        create_app(dataclasses.replace(settings, api_protect_reads=True))
    for bad in ("short", "has a space in it ok", "tökentökentökentöken"):
        with pytest.raises(ValueError, match="16 printable ASCII") as refused:
            check_access(dataclasses.replace(settings, api_token=bad))
        assert bad not in str(refused.value)


def test_settings_read_the_token_and_keep_it_out_of_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SKYSTREAM_API_TOKEN", TOKEN)
    for raw, protect in [("1", True), ("0", False), ("false", False), ("yes", True), ("", False)]:
        monkeypatch.setenv("SKYSTREAM_API_PROTECT_READS", raw)
        settings = Settings()
        assert settings.api_token == TOKEN and settings.api_protect_reads is protect, raw
        assert TOKEN not in f"{settings!r} {settings!s}" and "api_protect_reads" in repr(settings)
        assert TOKEN in settings.secrets()  # redacted where secrets are (stream/ingest/s3.py)


def test_the_token_stays_out_of_the_log_of_a_failing_request(settings: Settings, monkeypatch: pytest.MonkeyPatch,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    def broken(*args, **kwargs):
        raise RuntimeError("archive unreadable")

    monkeypatch.setattr(queries, "list_alerts", broken)
    caplog.set_level(logging.DEBUG)
    with serving(dataclasses.replace(settings, api_token=TOKEN, api_protect_reads=True)) as url:
        status, got, body = answer(url + "/alerts?object=x", headers=bearer(TOKEN))
        assert status == 500 and TOKEN.encode() not in body
        answer(url + "/alerts", headers=bearer(TOKEN + "-wrong"))
    assert "GET /alerts failed" in caplog.text and TOKEN not in caplog.text


def _cli(args: list[str], env: dict[str, str], cwd: Path, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]), **env}
    return subprocess.Popen([sys.executable, "-m", "stream.cli", *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kwargs)


def test_skystream_api_refuses_to_listen_beyond_loopback_without_a_token(tmp_path: Path) -> None:
    env = {"SKYSTREAM_API_TOKEN": "", "SKYSTREAM_API_PROTECT_READS": ""}
    for extra in (["--host", "0.0.0.0"], ["--host", "::"], ["--host", "0.0.0.0", "--token-file", str(tmp_path / "no")],
                  ["--protect-reads"]):
        proc = _cli(["api", "--port", "0", *extra], env, tmp_path)
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 2 and out.startswith("skystream api: "), (extra, out)
        assert ("SKYSTREAM_API_TOKEN" in out or "token file" in out), out
    (tmp_path / "empty").write_text("\n")
    proc = _cli(["api", "--host", "0.0.0.0", "--token-file", str(tmp_path / "empty")], env, tmp_path)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "is empty" in out, out


def test_skystream_api_never_logs_its_token(tmp_path: Path) -> None:
    """The token from --token-file (and another one in the environment) is nowhere in the server's output,
    debug logging on, through good, bad and failing requests."""
    (tmp_path / "token").write_text(TOKEN + "\n")
    env_token = "environment-token-9a8b7c6d5e"
    proc = _cli(["-v", "api", "--port", "0", "--registry", str(BUNDLED), "--archive", str(tmp_path / "archive"),
                 "--token-file", str(tmp_path / "token"), "--protect-reads"],
                {"SKYSTREAM_API_TOKEN": env_token}, tmp_path)
    lines = []
    try:
        while line := proc.stdout.readline():
            lines.append(line)
            if "SkyStream API and web view on " in line:
                break
        url = lines[-1].split(" on ", 1)[1].split("/ ", 1)[0]
        assert "POST /score and reads need the bearer token" in lines[-1], lines
        seen = []
        for path, data, headers in [("/score?name=a.txt", b"", bearer(TOKEN)), ("/score", b"x", bearer(env_token)),
                                    ("/alerts", None, bearer(TOKEN)), ("/alerts?limit=0", None, bearer(TOKEN)),
                                    ("/alerts", None, bearer(TOKEN + "x")), ("/objects/%00", None, bearer(TOKEN)),
                                    ("/", None, {})]:
            status, got, body = answer(url + path, data, headers)
            seen.append(status)
            assert TOKEN.encode() not in body and env_token.encode() not in body, path
            assert TOKEN not in json.dumps(got) and env_token not in json.dumps(got), path
        assert seen == [422, 401, 200, 400, 401, 400, 401], seen
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
    output = "".join(lines) + out
    assert proc.returncode == 0, output[-3000:]
    assert TOKEN not in output and env_token not in output
