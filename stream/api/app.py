"""The REST API and the web view: one aiohttp application (``create_app``), run by `skystream api`.

JSON routes (described in stream/api/openapi.py): ``POST /score``, ``GET /alerts``,
``GET /alerts/{alert_id}/figure.png``, ``GET /objects/{id}``, ``GET /models``, ``GET /healthz``,
``GET /openapi.json``. Web pages: ``/`` (latest alerts), ``/ui/objects/{id}``, ``/ui/models`` and their
figures under ``/ui/``. Errors are JSON ``{"error": ...}`` (HTML on pages) with a 4xx status; an
unexpected exception is logged here and answered with a 500 that carries no traceback.

Access: ``POST /score`` needs ``Authorization: Bearer <token>`` (Settings.api_token) and is refused (403)
when no token is configured; the reads need it too when Settings.api_protect_reads; /healthz,
/openapi.json and /static/ never do (stream/api/openapi.py ``needs_token``, which the description
uses too). The token is compared in constant time and never logged nor echoed.

Uploads are read into memory (at most the largest kind's limit, aiohttp's ``client_max_size``), checked
against their kind's limit and scored by stream/scoring/offline.py, as `skystream score` does; they are
never written to disk, and no path from a request is ever opened.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from stream import kinds
from stream.api import pages, plots, queries
from stream.api.openapi import build, needs_token
from stream.api.params import SCORE_QUERY, check_query
from stream.runtime.signals import stop_on_signals
from stream.settings import Settings

__all__ = ["check_access", "create_app", "is_loopback", "run", "upload_limit"]

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
# Multipart framing around the file itself (boundaries, part headers).
_MULTIPART_SLACK = 64 * 1024
_SETTINGS: web.AppKey[Settings] = web.AppKey("settings", Settings)
_SCORER: web.AppKey[Any] = web.AppKey("scorer", object)
_SCORING: web.AppKey[asyncio.Semaphore] = web.AppKey("scoring", asyncio.Semaphore)
_SPEC: web.AppKey[dict] = web.AppKey("openapi", dict)
_NAME = re.compile(r"[^A-Za-z0-9._\-\[\]()+ ]+")
_REASONS = ("planet-candidate", "known-planet-candidate", "multi-sector-candidate", "rare-composition",
            "novel-spectrum")


def upload_limit(settings: Settings) -> int:
    """The largest file any kind accepts (each kind's own limit is checked once the kind is known)."""
    return max(kinds.max_bytes(settings).values())


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda d: json.dumps(d, default=_json_default))


def _json_default(obj: object) -> object:
    if isinstance(obj, bytes):
        return None  # as `skystream score`: figures are served by their own route
    raise TypeError(type(obj).__name__)


def _error(status: int, message: str, page: bool) -> web.Response:
    if page:
        return web.Response(text=pages.error_page(status, message), status=status, content_type="text/html")
    return _json({"error": message}, status)


def _is_page(request: web.Request) -> bool:
    return request.path == "/" or request.path.startswith("/ui/")


@web.middleware
async def _errors(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                  ) -> web.StreamResponse:
    page = _is_page(request)
    try:
        return await handler(request)
    except queries.BadRequest as exc:
        return _error(400, str(exc), page)
    except LookupError as exc:
        return _error(404, str(exc.args[0]) if exc.args else "not found", page)
    except web.HTTPRequestEntityTooLarge as exc:
        return _error(413, f"the request is too large: {exc.text}", page)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        answer = _error(exc.status, exc.reason, page)
        # The exception's own headers say what the status means: a 405's Allow (RFC 9110) above all.
        answer.headers.extend((k, v) for k, v in exc.headers.items() if k not in ("Content-Type", "Content-Length"))
        return answer
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        return _error(500, "internal error (logged on the server)", page)


def _settings(request: web.Request) -> Settings:
    return request.app[_SETTINGS]


_NO_TOKEN = ("this server scores nothing: it has no API token. Start it with SKYSTREAM_API_TOKEN set (or "
             "`skystream api --token-file FILE`) and send the token as 'Authorization: Bearer <token>'")


def _bearer_matches(header: str | None, token: str) -> bool:
    """Whether an Authorization header carries ``token`` (compared in constant time)."""
    scheme, _, given = (header or "").strip().partition(" ")
    given_bytes = given.strip().encode("utf-8", "surrogateescape")
    return hmac.compare_digest(given_bytes, token.encode()) and scheme.lower() == "bearer"


@web.middleware
async def _access(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                  ) -> web.StreamResponse:
    """The bearer token where ``needs_token`` asks for it; unknown routes and methods get their 404/405."""
    settings, route = _settings(request), request.match_info.route
    if request.match_info.http_exception is not None or route.resource is None or not needs_token(
            request.method, route.resource.canonical, settings.api_protect_reads):
        return await handler(request)
    if not settings.api_token:
        return _error(403, _NO_TOKEN, _is_page(request))
    header = request.headers.get("Authorization")
    if _bearer_matches(header, settings.api_token):
        return await handler(request)
    answer = _error(401, "this needs the server's token: send 'Authorization: Bearer <token>'" if header is None
                    else "the Authorization header does not carry the server's token (Bearer <token>)",
                    _is_page(request))
    answer.headers["WWW-Authenticate"] = 'Bearer realm="skystream"' + ("" if header is None
                                                                        else ', error="invalid_token"')
    return answer


async def _off_loop(func: Callable[..., Any], *args: Any) -> Any:
    """Archive reads, registry reads and figures: off the event loop."""
    return await asyncio.to_thread(func, *args)


# -- JSON API -----------------------------------------------------------------------------------------
async def healthz(request: web.Request) -> web.Response:
    """GET /healthz: ``{"status": "ok"}`` while the server runs."""
    return _json({"status": "ok"})


async def openapi(request: web.Request) -> web.Response:
    """GET /openapi.json: the OpenAPI description of this API (as this server guards its reads)."""
    return _json(request.app[_SPEC])


def _upload_name(text: str | None) -> str:
    """The upload's own name, reduced to one safe path segment (it only names the file: never opened)."""
    base = (text or "").replace("\\", "/").rsplit("/", 1)[-1]
    return _NAME.sub("_", base).strip(". ")[:200] or "upload"


async def _read_upload(request: web.Request, limit: int) -> tuple[str, bytes]:
    """(name, content) of the file in a multipart form (field ``file``, else the first file) or a raw body."""
    if request.content_length is not None and request.content_length > limit + _MULTIPART_SLACK:
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=request.content_length)
    if request.content_type.startswith("multipart/"):
        try:
            return await _read_form(request, limit)
        except (HttpProcessingError, ValueError) as exc:  # a malformed form (part headers, boundary): the client's
            if isinstance(exc, queries.BadRequest):
                raise
            raise queries.BadRequest("the multipart form cannot be read: send the file as the field 'file' of a "
                                     "well-formed multipart/form-data body") from None
    data = await request.read()
    if len(data) > limit:
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=len(data))
    return _upload_name(request.query.get("name")), data


async def _read_form(request: web.Request, limit: int) -> tuple[str, bytes]:
    reader = await request.multipart()
    while (part := await reader.next()) is not None:
        if isinstance(part, BodyPartReader) and (part.name == "file" or part.filename):
            chunks, size = [], 0
            while chunk := await part.read_chunk(1 << 16):
                size += len(chunk)
                if size > limit:
                    raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=size)
                chunks.append(chunk)
            return _upload_name(part.filename), b"".join(chunks)
    raise queries.BadRequest("no file in the form: send it as the field 'file' (multipart/form-data)")


async def score(request: web.Request) -> web.Response:
    """POST /score: score an uploaded file as `skystream score` does."""
    from stream.errors import Rejected
    from stream.scoring.offline import detect_kind, score_bytes

    settings = _settings(request)
    check_query(SCORE_QUERY, request.query)
    name, data = await _read_upload(request, upload_limit(settings))
    uri = f"upload://{name}"
    try:
        kind = detect_kind(data)
    except Rejected:
        kind = None  # score_bytes gives the same rejection as `skystream score`
    if kind is not None and len(data) > (most := kinds.max_bytes(settings)[kind.name]):
        return _json({"source": uri, "rejected": True, "reason": "too-large",
                      "error": f"{len(data)} bytes is more than the limit for a {kind.name} ({most} bytes)"}, 413)
    async with request.app[_SCORING]:  # one file at a time: a light curve's search takes a core for seconds
        result = await asyncio.to_thread(score_bytes, request.app[_SCORER], data, uri)
    if result.get("rejected"):
        return _json(result, 500 if result["reason"] == "internal-error" else 422)
    return _json(result)


async def alerts(request: web.Request) -> web.Response:
    """GET /alerts: archived alerts matching the query (since, limit and filters)."""
    where, since, limit = queries.alert_query(request.query)
    found = await _off_loop(queries.list_alerts, _settings(request), where, since, limit)
    return _json({"count": len(found), "alerts": [queries.alert_json(a) for a in found]})


async def alert_figure(request: web.Request) -> web.Response:
    """GET an archived alert's inline PNG figure; 404 when it has none."""
    alert = await _off_loop(queries.alert_by_id, _settings(request), request.match_info["alert_id"])
    if alert is None:
        raise LookupError("no such alert in the archive")
    if not alert.get("figure_png"):
        raise LookupError("this alert has no inline figure" + (f" (stored at {alert['figure_uri']})"
                                                               if alert.get("figure_uri") else ""))
    return web.Response(body=alert["figure_png"], content_type="image/png",
                        headers={"Cache-Control": "max-age=86400"})  # an alert's figure never changes


async def object_history(request: web.Request) -> web.Response:
    """GET /objects/{id}: an object's archived predictions and alerts; 404 when there are none."""
    settings, object_id = _settings(request), request.match_info["id"]
    history = await _off_loop(queries.object_history, settings, object_id)
    found = await _off_loop(queries.object_alerts, settings, object_id)
    if not history and not found:
        raise LookupError(f"nothing archived for {object_id!r}")
    return _json({"object": object_id, "predictions": history, "alerts": [queries.alert_json(a) for a in found]})


async def models(request: web.Request) -> web.Response:
    """GET /models: every task's versions and champion in the registry."""
    return _json({"models": await _off_loop(queries.models, _settings(request))})


# -- web pages ----------------------------------------------------------------------------------------
def _html(text: str) -> web.Response:
    return web.Response(text=text, content_type="text/html")


def _png(data: bytes) -> web.Response:
    return web.Response(body=data, content_type="image/png")


async def alerts_view(request: web.Request) -> web.Response:
    """Web page of the latest 50 alerts matching the form's filters; 400 with the error for a bad filter."""
    params = {k: request.query.get(k, "").strip() for k in ("kind", "reason", "min_score", "object")}
    try:
        where = queries.alert_filter({k: v for k, v in params.items() if v})
        found = await _off_loop(queries.list_alerts, _settings(request), where, None, 50)
    except queries.BadRequest as exc:
        return web.Response(text=pages.alerts_page([], params, kinds=kinds.names(), reasons=_REASONS,
                                                   error=str(exc)), status=400, content_type="text/html")
    return _html(pages.alerts_page([queries.alert_json(a) for a in found], params, kinds=kinds.names(),
                                   reasons=_REASONS))


async def object_view(request: web.Request) -> web.Response:
    """Web page of an object's predictions and alerts; 404 when nothing is archived for it."""
    settings, object_id = _settings(request), request.match_info["id"]
    history = await _off_loop(queries.object_history, settings, object_id)
    found = await _off_loop(queries.object_alerts, settings, object_id)
    page = pages.object_page(object_id, history, found)
    return web.Response(text=page, status=200 if history or found else 404, content_type="text/html")


async def periods_png(request: web.Request) -> web.Response:
    """PNG of the transit periods found per sector for an object; 404 without a transit signal."""
    object_id = request.match_info["id"]
    history = await _off_loop(queries.object_history, _settings(request), object_id)
    curves = [r for r in history if r.get("kind") == "lightcurve" and r.get("signals")]
    if not curves:
        raise LookupError(f"no transit signal archived for {object_id!r}")
    return _png(await _off_loop(plots.periods_png, curves, f"{object_id}: periods found per sector"))


async def signal_png(request: web.Request) -> web.Response:
    """PNG of one archived transit signal, folded, drawn from its light-curve file (which must still be
    under the configured sources); 404 when the prediction, the signal or the file is not there."""
    from stream.alerts import figures
    from stream.errors import Rejected

    object_id, prediction_id, index = (request.match_info[k] for k in ("id", "prediction_id", "index"))
    settings = _settings(request)
    history = await _off_loop(queries.object_history, settings, object_id)
    found = next((r for r in history if r["prediction_id"] == prediction_id and r.get("kind") == "lightcurve"), None)
    if found is None or not index.isdigit():
        raise LookupError(f"no light-curve prediction {prediction_id[:16]!r} with signal {index!r} for {object_id!r}")
    try:
        png = await _off_loop(figures.signal_png, found, int(index), settings)
    except Rejected as exc:
        raise LookupError(f"cannot draw the figure from {found['source']}: {exc}") from None
    return web.Response(body=png, content_type="image/png", headers={"Cache-Control": "max-age=3600"})


async def probabilities_png(request: web.Request) -> web.Response:
    """PNG of the class probabilities of an object's spectrum prediction number ``index``."""
    object_id, index = request.match_info["id"], request.match_info["index"]
    history = await _off_loop(queries.object_history, _settings(request), object_id)
    spectra = [r for r in history if r.get("kind") == "spectrum" and r.get("probabilities")]
    if not index.isdigit() or int(index) >= len(spectra):
        raise LookupError(f"no spectrum prediction {index} for {object_id!r}")
    r = spectra[int(index)]
    return _png(await _off_loop(plots.probabilities_png, r["probabilities"],
                                f"{object_id}: main group ({r['model']} v{r['model_version']})"))


def _figure_url(task: str, version: str, name: str) -> str:
    return f"/ui/models/{task}/{version}/{name}.png"


async def models_view(request: web.Request) -> web.Response:
    """Web page of the registry's models, with links to each version's evaluation figures."""
    found = await _off_loop(queries.models, _settings(request))
    figures, missing = {}, {}
    for m in found:
        for v in m["versions"]:
            meta = await _off_loop(queries.registry_version, _settings(request), m["task"], v["version"])
            figures[(m["task"], v["version"])] = [(caption, _figure_url(m["task"], v["version"], name))
                                                  for name, (caption, _) in plots.model_figures(meta).items()]
            missing[(m["task"], v["version"])] = plots.missing_evaluations(meta)
    return _html(pages.models_page(found, figures, missing))


async def model_figure(request: web.Request) -> web.Response:
    """PNG of one evaluation figure of a model version; 404 when that version has no such figure."""
    task, version, name = (request.match_info[k] for k in ("task", "version", "name"))
    meta = await _off_loop(queries.registry_version, _settings(request), task, version)
    figure = plots.model_figures(meta).get(name)
    if figure is None:
        raise LookupError(f"no figure {name!r} for {task} v{version}")
    return _png(await _off_loop(figure[1]))


_TOKEN = re.compile(r"[\x21-\x7e]{16,}")
_MAKE_TOKEN = "python -c 'import secrets; print(secrets.token_urlsafe(32))'"


def is_loopback(host: str) -> bool:
    """Whether ``host`` reaches this machine only (127.0.0.0/8, ::1, localhost)."""
    host = host.strip().strip("[]").lower()
    if host in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name, or an address of every interface ("", 0.0.0.0, ::)


def check_access(settings: Settings, host: str | None = None) -> None:
    """ValueError, saying what to set, for a configuration that must not serve: a malformed token, reads to
    protect without a token, or (``host`` given) listening beyond this machine without a token."""
    token = settings.api_token
    if token is not None and not _TOKEN.fullmatch(token):
        raise ValueError("the API token must be at least 16 printable ASCII characters without spaces "
                         f"(make one with: {_MAKE_TOKEN})")
    if settings.api_protect_reads and not token:
        raise ValueError("SKYSTREAM_API_PROTECT_READS is set but there is no token to check reads against: set "
                         "SKYSTREAM_API_TOKEN or pass --token-file FILE")
    if host is not None and not token and not is_loopback(host):
        raise ValueError(f"refusing to listen on {host!r} without an API token: anyone who can reach it could "
                         "use it. Set SKYSTREAM_API_TOKEN or pass --token-file FILE (make a token with: "
                         f"{_MAKE_TOKEN}), or listen on 127.0.0.1")


def create_app(settings: Settings | None = None) -> web.Application:
    """The API and web application over ``settings``' archive (SKYSTREAM_ARCHIVE) and registry; ValueError for
    a token configuration that cannot work (``check_access``)."""
    from stream.scoring.scorer import scorer_for

    settings = settings or Settings()
    check_access(settings)
    app = web.Application(middlewares=[_errors, _access],
                          client_max_size=upload_limit(settings) + _MULTIPART_SLACK)
    app[_SETTINGS] = settings
    app[_SPEC] = build(settings.api_protect_reads)
    app[_SCORER] = scorer_for(settings)
    app[_SCORING] = asyncio.Semaphore(1)
    app.router.add_post("/score", score)
    app.router.add_get("/alerts", alerts)
    app.router.add_get("/alerts/{alert_id}/figure.png", alert_figure)
    app.router.add_get("/objects/{id}", object_history)
    app.router.add_get("/models", models)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/openapi.json", openapi)
    app.router.add_get("/", alerts_view)
    app.router.add_get("/ui/objects/{id}", object_view)
    app.router.add_get("/ui/objects/{id}/periods.png", periods_png)
    app.router.add_get("/ui/objects/{id}/probabilities/{index}.png", probabilities_png)
    app.router.add_get("/ui/objects/{id}/signals/{prediction_id}/{index}.png", signal_png)
    app.router.add_get("/ui/models", models_view)
    app.router.add_get("/ui/models/{task}/{version}/{name}.png", model_figure)
    app.router.add_static("/static/", STATIC)
    return app


def run(settings: Settings, host: str = "127.0.0.1", port: int = 8080,
        announce: Callable[[str], None] = print) -> None:
    """Serve until Ctrl-C or SIGTERM; ``announce`` is told the address (port 0: a free one) and who may do
    what. ValueError (before listening) when ``check_access`` refuses the configuration."""
    check_access(settings, host)
    if not settings.api_token:
        access = "reads open; POST /score refused (no token: set SKYSTREAM_API_TOKEN to enable it)"
    else:
        access = f"POST /score {'and reads need' if settings.api_protect_reads else 'needs'} the bearer token"

    async def main() -> None:
        """Serve until SIGINT or SIGTERM, then clean up the runner."""
        runner = web.AppRunner(create_app(settings), access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
            bound_host, bound_port = runner.addresses[0][:2]
            announce(f"SkyStream API and web view on http://{bound_host}:{bound_port}/ ({access}; Ctrl-C to stop)")
            await stop_on_signals().wait()
        finally:
            await runner.cleanup()

    asyncio.run(main())
