"""Schema evolution: released messages stay readable, and v2 alerts and predictions carry their numbers.

v1 bytes are made the way a v1 producer made them: fastavro with the released v1 .avsc file, behind
the single-object header. Light curves and spectra are real files from ../shared/data.
"""

from __future__ import annotations

import io
import struct
import tarfile
from datetime import datetime
from pathlib import Path
from typing import Any

import fastavro
import pytest
from data_paths import require_data
from fastavro.schema import fingerprint, to_parsing_canonical_form

import schemas

# The wire fingerprints of every released version: a subscriber's decoder is keyed on them, so a
# released schema file must never change (a change goes into a new version).
RELEASED = {
    ("FileEvent", 1): "b58ce545f705676a",
    ("SpectrumFeatures", 1): "6cd011d8b30293e2",
    ("LightCurveFeatures", 1): "79e1b4e987ca9eae",
    ("Prediction", 1): "e88f5d3e87c4b2ba",
    ("Alert", 1): "b50f5e07c7183127",
    ("Rejected", 1): "c8c83a5c94f56f1d",
    ("ModelUpdate", 1): "04a8a111f3b85b36",
    ("Label", 1): "442b2052ba8ca890",
}
WASP126 = "tess/lc/tic25155310_s06_lc.fits"  # WASP-126 b = TOI-114.01, P = 3.289 d, sector 6


def v1_bytes(name: str, record: dict[str, Any]) -> bytes:
    """A message as the v1 code wrote it: straight from the released v1 .avsc file."""
    path = Path(schemas.__file__).parent / "avro" / "v1" / schemas._FILES[name]
    parsed = fastavro.parse_schema(fastavro.schema.load_schema(path))
    fp = struct.pack("<Q", int(fingerprint(to_parsing_canonical_form(parsed), "CRC-64-AVRO"), 16))
    body = io.BytesIO()
    fastavro.schemaless_writer(body, parsed, record)
    return b"\xc3\x01" + fp + body.getvalue()


V1_ALERT = {
    "alert_id": "a" * 64, "prediction_id": "p" * 64, "file_id": "f" * 64, "kind": "lightcurve",
    "object": "TIC 25155310", "source": "/data/tic25155310_s06_lc.fits", "reason": "known-planet-candidate",
    "score": 0.75, "summary": "TIC 25155310 sector 6: P=3.2890 d", "model": "tess-triage-cnn",
    "model_version": "3", "figure_uri": None, "figure_png": b"\x89PNG",
}
V1_PREDICTION = {
    "prediction_id": "p" * 64, "file_id": "f" * 64, "kind": "spectrum", "source": "/data/a000004.[2]",
    "object": "4", "model": "smass-cnn", "model_version": "2", "detected_at_ms": 5, "main_group": "Other",
    "probabilities": {"C": 0.0, "S": 0.25, "X": 0.0, "Other": 0.75}, "bus_class": "V", "bus_probability": 0.75,
    "sector": None, "signals": None,
}


# -- the rule: every released version stays, and its fingerprint never changes ---------------------
@pytest.mark.parametrize(("name", "version"), sorted(RELEASED))
def test_released_schemas_keep_their_fingerprints(name: str, version: int) -> None:
    assert version in schemas.released_versions(name)
    assert schemas.schema_json(name, version)["version"] == version
    assert schemas.fingerprint_of(name, version) == RELEASED[name, version]


@pytest.mark.parametrize("name", schemas.SCHEMA_NAMES)
def test_the_current_version_is_the_newest_and_changed_ones_have_new_fingerprints(name: str) -> None:
    versions = schemas.released_versions(name)
    current = schemas.schema_json(name)["version"]
    assert versions[-1] == current
    older = {schemas.fingerprint_of(name, v) for v in versions[:-1]}
    assert current == 1 or schemas.fingerprint_of(name) not in older


def test_alert_prediction_and_lightcurve_features_are_at_v2() -> None:
    for name in ("Alert", "Prediction", "LightCurveFeatures"):
        assert schemas.released_versions(name) == (1, 2)
    with pytest.raises(schemas.SchemaError, match="no released version 7"):
        schemas.schema_json("Alert", 7)


# -- old bytes decode with the current code ---------------------------------------------------------
def test_v1_alert_decodes_as_a_v2_alert_with_defaults() -> None:
    name, record = schemas.decode(v1_bytes("Alert", V1_ALERT), expect="Alert")
    assert name == "Alert"
    assert {k: record[k] for k in V1_ALERT} == V1_ALERT
    assert set(record) == {f["name"] for f in schemas.schema_json("Alert")["fields"]}
    assert record["alerted_at"] is None and record["ra_deg"] is None and record["period_days"] is None
    # ...and can be written again as v2.
    assert schemas.decode(schemas.encode("Alert", record))[1] == record


def test_v1_prediction_decodes_as_a_v2_prediction_with_defaults() -> None:
    _, record = schemas.decode(v1_bytes("Prediction", V1_PREDICTION), expect="Prediction")
    assert {k: record[k] for k in V1_PREDICTION} == V1_PREDICTION
    assert record["asteroid_number"] is None and record["bus_probabilities"] is None
    assert record["observation_start"] is None


def test_a_v1_subscriber_reads_v2_messages_by_resolution() -> None:
    """A subscriber still on the v1 file reads a v2 message (new fields are skipped), given the v2
    writer schema that the message's fingerprint names."""
    new = {f["name"]: f.get("default") for f in schemas.schema_json("Alert")["fields"] if f["name"] not in V1_ALERT}
    v2 = {**V1_ALERT, **new, "ra_deg": 63.37, "period_days": 3.289}
    data = schemas.encode("Alert", v2)
    old = fastavro.schemaless_reader(io.BytesIO(data[10:]), schemas.schema("Alert"), schemas.schema("Alert", 1))
    assert old == V1_ALERT


def test_decode_still_refuses_the_wrong_type_for_an_old_version() -> None:
    with pytest.raises(schemas.SchemaError, match="expected a Prediction message, got Alert"):
        schemas.decode(v1_bytes("Alert", V1_ALERT), expect="Prediction")


# -- v2 content from real files ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def wasp126() -> tuple[Path, dict]:
    """WASP-126's sector-6 light curve and its LightCurveFeatures, read and searched once."""
    from stream.features.transits import lightcurve_features

    path = require_data(WASP126)
    return path, lightcurve_features(path.read_bytes(), uri=str(path), file_id="wasp126-s06", detected_at_ms=1)


@pytest.fixture(scope="module")
def tess_model():
    from stream.models.registry import BUNDLED, LocalRegistry
    from stream.scoring.onnx_model import OnnxModel

    registry = LocalRegistry(BUNDLED, seed_from=None)
    if "tess" not in registry.tasks():
        pytest.skip("no shipped tess model in stream/bundled/registry")
    return OnnxModel(registry.load("tess"))


@pytest.fixture(scope="module")
def toi():
    from stream.scoring.toi import TOICatalog

    return TOICatalog.from_csv(require_data("tess/catalogs/toi_2025-10-04.csv"))


def test_wasp126b_alert_carries_its_numbers_as_fields(wasp126, tess_model, toi,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from stream.alerts.policy import alerts_for

    monkeypatch.setenv("SKYSTREAM_SOURCES", str(wasp126[0].parent))  # the figure reads the file again
    from stream.scoring.transit_predictor import predict_transits

    _, features = wasp126
    assert features["star"]["ra_deg"] == pytest.approx(63.37389) and features["time_start_btjd"] > 1468
    prediction = predict_transits(tess_model, [features], toi)[0]
    assert prediction["tic_id"] == 25155310 and prediction["ra_deg"] == pytest.approx(63.37389)
    alerts = alerts_for(prediction)
    _, alert = schemas.decode(schemas.encode("Alert", alerts[0]), expect="Alert")

    assert alert["tic_id"] == 25155310 and alert["sector"] == 6
    assert alert["ra_deg"] == pytest.approx(63.37389) and alert["dec_deg"] == pytest.approx(-69.226789)
    assert alert["tmag"] == pytest.approx(10.555, abs=1e-3)
    assert alert["period_days"] == pytest.approx(3.2889, abs=0.005)
    assert 3000 < alert["depth_ppm"] < 8000  # ~0.45 % deep
    assert alert["planet_radius_earth"] == pytest.approx(10.5, rel=0.2)
    assert alert["snr"] >= 10 and alert["n_transits"] >= 2 and alert["planet_probability"] >= 0.5
    assert alert["known_toi"] == "TOI-114.01"
    # Sector 6 ran from 2018-12-11 to 2019-01-07: the valid cadences lie within it.
    assert "2018-12-11" < alert["observation_start"] < alert["observation_end"] < "2019-01-08"
    assert alert["observation_start"].endswith("Z")
    assert datetime.fromisoformat(alert["alerted_at"]).tzinfo is not None
    assert alert["figure_png"].startswith(b"\x89PNG") or alert["figure_uri"]
    assert alert["main_group"] is None and alert["asteroid_number"] is None
    assert "P=3.28" in alert["summary"]  # the readable line stays

    # A replay gives the same alert: same id and content, only the issue time may differ.
    again = alerts_for(predict_transits(tess_model, [features], toi)[0])[0]
    assert again["alert_id"] == alerts[0]["alert_id"]
    assert {**again, "alerted_at": None} == {**alerts[0], "alerted_at": None}


def test_retained_v1_lightcurve_features_can_be_rescored(wasp126, tess_model, toi) -> None:
    """A v1 features message (no position, no time span) still scores: those fields come out null."""
    from stream.scoring.transit_predictor import predict_transits

    _, features = wasp126
    v1 = {k: v for k, v in features.items() if k not in ("time_start_btjd", "time_end_btjd")}
    v1["star"] = {k: v for k, v in features["star"].items() if k not in ("ra_deg", "dec_deg")}
    _, old = schemas.decode(v1_bytes("LightCurveFeatures", v1), expect="LightCurveFeatures")
    assert old["time_start_btjd"] is None and old["star"]["ra_deg"] is None
    prediction = predict_transits(tess_model, [old], toi)[0]
    schemas.encode("Prediction", prediction)
    assert prediction["ra_deg"] is None and prediction["observation_start"] is None
    assert prediction["tic_id"] == 25155310 and prediction["signals"][0]["known_toi"] == "TOI-114.01"


@pytest.fixture(scope="module")
def smass_model():
    from stream.models.registry import BUNDLED, LocalRegistry
    from stream.scoring.onnx_model import OnnxModel

    if not (BUNDLED / "smass" / "champion.json").exists():
        pytest.skip("no bundled smass model")
    return OnnxModel(LocalRegistry(BUNDLED, seed_from=None).load("smass"))


def test_spectrum_predictions_and_alerts_carry_the_asteroid_and_its_classes(smass_model) -> None:
    from stream.alerts.policy import alerts_for
    from stream.features.spectra import spectrum_features
    from stream.scoring.spectrum_predictor import predict_spectra

    wanted = {"a000004.[2]", "au1996UK.[2]"}  # 4 Vesta (V type) and 1996 UK (Sq type)
    with tarfile.open(require_data("smass2/smass2data.tar.gz")) as tar:
        files = {Path(m.name).name: tar.extractfile(m).read() for m in tar.getmembers()
                 if Path(m.name).name in wanted}
    records = [spectrum_features(files[n], uri=f"file:///smass2/{n}", file_id=n, detected_at_ms=0)
               for n in sorted(wanted)]
    vesta, uk = (schemas.decode(schemas.encode("Prediction", p))[1] for p in predict_spectra(smass_model, records))

    assert vesta["asteroid_number"] == 4 and vesta["designation"] is None
    assert uk["asteroid_number"] is None and uk["designation"] == "1996 UK"
    assert vesta["main_group"] == "Other" and vesta["bus_class"] == "V"
    assert uk["main_group"] == "S"
    for p in (vesta, uk):
        assert p["bus_probabilities"][p["bus_class"]] == pytest.approx(p["bus_probability"])
        assert sum(p["bus_probabilities"].values()) == pytest.approx(1, abs=1e-4)
        assert p["ra_deg"] is None and p["tic_id"] is None and p["observation_start"] is None

    assert alerts_for(uk) == []
    [alert] = alerts_for(vesta)  # a V type is rare: outside the C, S and X complexes
    _, alert = schemas.decode(schemas.encode("Alert", alert))
    assert alert["asteroid_number"] == 4 and alert["bus_class"] == "V" and alert["main_group"] == "Other"
    assert alert["probabilities"] == vesta["probabilities"] and alert["period_days"] is None
