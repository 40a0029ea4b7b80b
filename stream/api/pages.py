"""The web view's HTML: plain server-rendered pages from string templates.

Every value from the archive, the registry or the request goes through ``html.escape`` (``_e``) and
every URL built from one through ``urllib.parse.quote``; the pages load only /static/style.css and
images of this server, so they work offline.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from stream.stars import sector_label, sectors_phrase, widest_search

__all__ = ["alerts_page", "error_page", "models_page", "object_page", "object_url"]


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _num(value: Any, fmt: str = ".3g") -> str:
    return "–" if value is None else _e(format(value, fmt)) if isinstance(value, int | float) else _e(value)


def object_url(name: str) -> str:
    """The web page of an object."""
    return "/ui/objects/" + quote(str(name), safe="")


def _layout(title: str, body: str) -> str:
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{_e(title)} · SkyStream</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="/static/style.css"></head>
<body><header><a class="brand" href="/">SkyStream</a>
<nav><a href="/">alerts</a><a href="/ui/models">models</a><a href="/openapi.json">API</a></nav></header>
<main><h1>{_e(title)}</h1>
{body}
</main></body></html>"""


def _table(headers: Sequence[str], rows: Iterable[Sequence[str]], cls: str = "") -> str:
    """A table of already-escaped cells."""
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{_e(cls)}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _when(ms: Any) -> str:
    if not isinstance(ms, int):
        return "–"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _key_numbers(a: Mapping[str, Any]) -> str:
    if a.get("kind") == "lightcurve":
        parts = [f"P = {_num(a.get('period_days'), '.4f')} d", f"depth {_num(a.get('depth_ppm'), '.0f')} ppm",
                 f"SNR {_num(a.get('snr'), '.1f')}", f"P(planet) {_num(a.get('planet_probability'), '.2f')}"]
        if a.get("planet_radius_earth") is not None:
            parts.append(f"R ≈ {_num(a['planet_radius_earth'], '.1f')} R⊕")
        if a.get("known_toi"):
            parts.append(f"TOI {_e(a['known_toi'])}")
        if sector_label(a):
            parts.append(_e(sectors_phrase(a)))
        return " · ".join(parts)
    parts = [f"group {_e(a.get('main_group'))}", f"Bus class {_e(a.get('bus_class'))}",
             f"p(Bus) {_num(a.get('bus_probability'), '.2f')}"]
    if a.get("novelty") is not None:  # a conformal p-value: small = unlike the training spectra
        parts.append(f"novelty p {_num(a['novelty'], '.4f')}")
    return " · ".join(parts)


def _select(name: str, current: str, options: Sequence[str]) -> str:
    opts = "".join(f'<option value="{_e(o)}"{" selected" if o == current else ""}>{_e(o or "any")}</option>'
                   for o in ("", *options))
    return f'<select name="{_e(name)}" id="{_e(name)}">{opts}</select>'


def alerts_page(alerts: Sequence[Mapping[str, Any]], params: Mapping[str, str], *, kinds: Sequence[str],
                reasons: Sequence[str], error: str | None = None) -> str:
    """The latest alerts, newest first, with their figures and key numbers, and the filter form."""
    form = f"""<form class="filters" method="get" action="/">
<label for="kind">kind</label>{_select("kind", params.get("kind", ""), kinds)}
<label for="reason">reason</label>{_select("reason", params.get("reason", ""), reasons)}
<label for="min_score">min score</label>
<input id="min_score" name="min_score" size="5" value="{_e(params.get("min_score", ""))}">
<label for="object">object</label><input id="object" name="object" size="14" value="{_e(params.get("object", ""))}">
<button type="submit">filter</button> <a href="/">clear</a></form>"""
    if error:
        return _layout("Latest alerts", form + f'<p class="error">{_e(error)}</p>')
    if not alerts:
        return _layout("Latest alerts", form + '<p class="empty">No archived alert matches.</p>')
    cards = []
    for a in alerts:
        figure = (f'<a href="{_e(a["figure_url"])}"><img src="{_e(a["figure_url"])}" alt="diagnostic figure of '
                  f'{_e(a["object"])}" loading="lazy"></a>' if a.get("figure_url") else
                  '<p class="nofig">no figure (spectrum alerts carry none)</p>')
        cards.append(f"""<article class="alert {_e(a["kind"])}">
<div class="meta"><h2><a href="{_e(object_url(a["object"]))}">{_e(a["object"])}</a>
<span class="reason">{_e(a["reason"])}</span> <span class="score">score {_num(a["score"], ".2f")}</span></h2>
<p class="summary">{_e(a["summary"])}</p>
<p class="numbers">{_key_numbers(a)}</p>
<p class="small">{_e(a["model"])} v{_e(a["model_version"])} · published {_when(a.get("published_at_ms"))}</p>
</div>{figure}</article>""")
    return _layout("Latest alerts", form + f'<p class="count">{len(alerts)} alerts, newest first</p>'
                   + "\n".join(cards))


def object_page(object_id: str, history: Sequence[Mapping[str, Any]], alerts: Sequence[Mapping[str, Any]]) -> str:
    """One object's archived predictions and alerts: periods over sectors, class probabilities, figures."""
    if not history and not alerts:
        return _layout(object_id, '<p class="empty">Nothing archived for this object.</p>')
    parts = []
    # A star's one-sector predictions, and of its searches over several sectors the widest (the newest of
    # those): the earlier ones, over fewer sectors, are what it superseded.
    curves = [r for r in history if r.get("kind") == "lightcurve" and not r.get("sectors")]
    if (widest := widest_search(history)) is not None:
        curves.append(widest)
    spectra = [r for r in history if r.get("kind") == "spectrum"]
    if curves:
        base = f"/ui/objects/{quote(object_id, safe='')}"
        rows, folds = [], []
        for r in curves:
            for i, s in enumerate(r.get("signals") or []):
                anchor = _e(f"fold-{r['prediction_id'][:16]}-{i}")
                rows.append([_e(sector_label(r)), _e(r.get("observation_start")), _num(s["period_days"], ".5f"),
                             _num(s.get("epoch_btjd"), ".4f"), _e(s.get("n_transits")), _num(s["depth_ppm"], ".0f"),
                             _num(s["snr"], ".1f"), _num(s["planet_probability"], ".2f"),
                             _e(s.get("known_toi") or "new"), _e(f"{r['model']} v{r['model_version']}"),
                             f'<a href="#{anchor}">folded</a>'])
                # Each signal folded, drawn on request from its light-curve file (while it is under the sources).
                url = f"{base}/signals/{quote(r['prediction_id'], safe='')}/{i}.png"
                folds.append(f'<figure id="{anchor}"><img loading="lazy" src="{_e(url)}" '
                             f'alt="{_e(sectors_phrase(r))} signal {i + 1} folded">'
                             f'<figcaption>{_e(sectors_phrase(r))}, signal {i + 1}: '
                             f'P = {_num(s["period_days"], ".4f")} d</figcaption></figure>')
        parts.append("<h2>Transit signals by sector, and over the star's sectors together (1+2+…)</h2>" + _table(
            ["sector", "observed from", "period (d)", "epoch (BTJD)", "transits", "depth (ppm)", "SNR", "P(planet)",
             "TOI", "model", ""], rows))
        if rows:
            parts.append(f'<img class="plot" src="{_e(base + "/periods.png")}" alt="periods over sectors">')
            parts.append("<h2>Folded light curves</h2>" + "".join(folds))
    for i, r in enumerate(spectra):
        probs = r.get("probabilities") or {}
        rows = [[_e(k), _num(v, ".3f"), f'<span class="bar" style="width:{max(0.0, min(1.0, v)) * 100:.0f}%">'
                 "</span>"] for k, v in sorted(probs.items(), key=lambda kv: -kv[1])]
        url = f"/ui/objects/{quote(object_id, safe='')}/probabilities/{i}.png"
        parts.append(f"<h2>Spectrum: {_e(r.get('main_group'))} group, Bus class {_e(r.get('bus_class'))}</h2>"
                     f"<p class=\"small\">{_e(r['model'])} v{_e(r['model_version'])} · {_e(r.get('source'))}</p>"
                     + _table(["main group", "probability", ""], rows, "probs")
                     + f'<img class="plot" src="{_e(url)}" alt="class probabilities">'
                     + '<p class="small">The archive keeps predictions, not spectra: the spectrum itself is not '
                     "shown.</p>")
    if alerts:
        parts.append("<h2>Alerts</h2>")
        for a in alerts:
            fig = (f'<img src="/alerts/{_e(a["alert_id"])}/figure.png" alt="diagnostic figure">'
                   if a.get("figure_png") else "")
            parts.append(f'<article class="alert"><div class="meta"><p><span class="reason">{_e(a["reason"])}</span> '
                         f'{_e(a["summary"])}</p><p class="numbers">{_key_numbers(a)}</p></div>{fig}</article>')
    parts.append("<h2>Every archived prediction</h2>" + _table(
        ["kind", "sector", "observed from", "model", "source", "published"],
        [[_e(r.get("kind")), _e(sector_label(r)), _e(r.get("observation_start")),
          _e(f"{r['model']} v{r['model_version']}"), _e(r.get("source")), _when(r.get("published_at_ms"))]
         for r in history]))
    return _layout(object_id, "\n".join(parts))


def _flat(metrics: Mapping[str, Any], prefix: str = "") -> Iterable[tuple[str, Any]]:
    for k, v in metrics.items():
        if isinstance(v, Mapping):
            if k not in ("confusion_matrix",):
                yield from _flat(v, f"{prefix}{k}.")
        elif isinstance(v, int | float | str) and not isinstance(v, bool):
            yield f"{prefix}{k}", v


def models_page(models: Sequence[Mapping[str, Any]], figures: Mapping[tuple[str, str], Sequence[tuple[str, str]]],
                missing: Mapping[tuple[str, str], Sequence[str]]) -> str:
    """Each task's champion: its evaluation (metrics, figures, what its metadata lacks) and version history.

    ``figures[(task, version)]`` lists (caption, url) of the figures its metadata can give."""
    parts = []
    for m in models:
        task, champion = m["task"], m["champion"]
        meta = next((v for v in m["versions"] if v["version"] == champion), {})
        parts.append(f'<section class="model"><h2>{_e(task)}: {_e(meta.get("name"))} v{_e(champion)} '
                     f'<span class="reason">champion</span></h2><p>{_e(meta.get("description"))}</p>'
                     f'<p class="small">created {_e(meta.get("created"))} · promotions: '
                     f'{_e(" → ".join(m["history"]) or "none")}</p>')
        for caption, url in figures.get((task, champion), ()):
            parts.append(f'<figure><img class="plot" src="{_e(url)}" alt="{_e(caption)}">'
                         f"<figcaption>{_e(caption)}</figcaption></figure>")
        lacking = missing.get((task, champion), ())
        if lacking:
            parts.append(f'<p class="missing">Not in this model\'s metadata: {_e(", ".join(lacking))}.</p>')
        rows = [[_e(k), _num(v, ".4g")] for k, v in _flat(meta.get("metrics", {}))]
        opened = " open" if len(rows) <= 25 else ""  # a long table stays folded below the figures
        parts.append(f"<details{opened}><summary>metrics ({len(rows)})</summary>"
                     + _table(["metric", "value"], rows, "metrics") + "</details>")
        parts.append("<h3>Versions</h3>" + _table(
            ["version", "name", "created", "champion"],
            [[_e(v["version"]), _e(v.get("name")), _e(v.get("created")), "✔" if v["version"] == champion else ""]
             for v in m["versions"]]) + "</section>")
    return _layout("Models", "\n".join(parts) or '<p class="empty">The registry holds no model.</p>')


def error_page(status: int, message: str) -> str:
    """A page for a request the server cannot answer."""
    return _layout(f"{status}", f'<p class="error">{_e(message)}</p><p><a href="/">back to the alerts</a></p>')

