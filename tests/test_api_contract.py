"""Contract test of `skystream api`: schemathesis, driven by the server's own /openapi.json, against the real
server on loopback over the real archive of tests/test_api.py, with a token and protected reads.

Every check runs (``--checks all``): no 5xx, every status, content type and header declared, valid requests
accepted, invalid ones refused, 401 without the token, 405 with ``Allow``. The run is bounded (examples per
operation, a fixed seed, a time budget) so that it takes well under two minutes on two cores.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from aiohttp import web
from test_api import archived, inputs, serving  # noqa: F401  (module fixtures: the archive with real content)

from stream.settings import Settings

TOKEN = "contract-test-token-4f1c9e2a7b"
# Fixed, so that CI runs the same requests every time; set SKYSTREAM_CONTRACT_SEED to explore others.
SEED = os.environ.get("SKYSTREAM_CONTRACT_SEED", "20261122")
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
# POST /score takes any bytes by its description (a spectrum table or a light-curve FITS): whether they hold a
# file that can be scored is beyond what a schema can say, so a valid-looking random upload may get its
# declared 413 (too large for its kind) or 422 (cannot be scored) as well as a 2xx.
CONFIG = """
[[operations]]
include-path = "/score"
checks.positive_data_acceptance.expected-statuses = ["2xx", "413", "422"]
"""


def protected(settings: Settings) -> Settings:
    """The settings with a token that also guards the reads (the strictest configuration)."""
    return dataclasses.replace(settings, api_token=TOKEN, api_protect_reads=True)


@contextmanager
def counted_server(settings: Settings) -> Iterator[tuple[str, Counter]]:
    """The application on a free loopback port, in a thread; yields its URL and a count of its answers by status."""
    statuses: Counter = Counter()

    async def count(request: web.Request, response: web.StreamResponse) -> None:
        statuses[response.status] += 1

    with serving(settings, on_response=count) as url:
        yield url, statuses


def schemathesis_run(url: str, workdir: Path, examples: int = 100) -> tuple[int, dict, str]:
    """(exit code, JSON report, output) of one bounded `schemathesis run` against ``url``."""
    config = workdir / "schemathesis.toml"
    config.write_text(CONFIG)
    report = workdir / "report.json"
    cmd = [str(SCHEMATHESIS), "--config-file", str(config), "run", f"{url}/openapi.json",
           "--checks", "all", "--max-examples", str(examples), "--seed", SEED, "--workers", "1",
           "--request-timeout", "30", "--no-shrink", "--generation-database", "none",
           "--header", f"Authorization: Bearer {TOKEN}", "--report", "json", "--report-json-path", str(report),
           "--no-color"]
    done = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=300)
    return done.returncode, json.loads(report.read_text()), done.stdout + done.stderr


@pytest.mark.skipif(not SCHEMATHESIS.exists(), reason="schemathesis not installed (pip install -e '.[test]')")
def test_schemathesis_finds_no_disagreement_between_spec_and_server(archived: Settings,  # noqa: F811
                                                                      tmp_path: Path) -> None:
    with counted_server(protected(archived)) as (url, statuses):
        code, report, output = schemathesis_run(url, tmp_path)
    sent = sum(statuses.values())
    print(f"schemathesis: {sent} requests answered {dict(sorted(statuses.items()))}, "
          f"test cases {report['test_cases']}, failures {report['failures']}")
    assert report["complete"] and report["operations"]["tested"] == report["operations"]["selected"] >= 6, output
    assert not report["failures"] and not report["errors"], output
    assert code == 0, output
    assert sent > 300 and not any(s >= 500 for s in statuses), statuses
    # The token was used (reads answered 200) and withheld (schemathesis' ignored_auth: 401).
    assert statuses[200] and statuses[401], statuses


def test_whatever_a_parameter_admits_the_handlers_can_use() -> None:
    """The other half of agreement by construction: every value a parameter's schema admits is used by the
    handlers without a BadRequest (or worse), drawn from the schema's own pattern and bounds."""
    hypothesis = pytest.importorskip("hypothesis")  # installed with schemathesis
    from hypothesis import strategies as st

    from stream.api import queries
    from stream.api.params import ALERT_ID, ALERTS_QUERY, OBJECT_ID
    from stream.archive.query import object_names

    def drawn(p) -> st.SearchStrategy:
        schema = p.schema()["items"] if p.many else p.schema()
        if p.type == "integer":
            return st.integers(int(p.minimum), int(p.maximum)).map(str)
        if p.type == "number":
            return st.floats(p.minimum, p.maximum).map(repr)
        return st.from_regex(schema["pattern"].removeprefix("^").removesuffix("$"), fullmatch=True)

    @hypothesis.settings(max_examples=1000, deadline=None, database=None)
    @hypothesis.given(st.one_of(*[drawn(p).map(lambda v, name=p.name: (name, v)) for p in ALERTS_QUERY]))
    def admitted(param: tuple[str, str]) -> None:
        where, since, limit = queries.alert_query(dict([param]), now=1.8e9)
        assert 1 <= limit <= 1000 and (since is None or isinstance(since, int))

    admitted()

    @hypothesis.settings(max_examples=300, deadline=None, database=None)
    @hypothesis.given(drawn(OBJECT_ID), drawn(ALERT_ID))
    def ids(object_id: str, alert_id: str) -> None:
        assert queries.check_object(object_id) == object_id and object_names(object_id)
        ALERT_ID.check(alert_id)

    ids()
