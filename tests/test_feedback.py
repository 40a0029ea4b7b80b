"""Retraining from feedback: Label records from the real TOI table and Bus taxonomy, the labels topic
round trip on the embedded broker, and the merges the trainers apply (training/feedback.py)."""

from __future__ import annotations

import argparse
import asyncio
import json
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from data_paths import require_data

import schemas
from stream.cli import labels as labels_cli
from stream.features.spectra import object_name
from stream.ingest import labels as label_sources
from training import feedback

TOI_CSV = "tess/catalogs/toi_2025-10-04.csv"
BUS_TXT = "smass2/Bus.Taxonomy.txt"


def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="skystream")
    labels_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    return args.func(args)


@pytest.fixture(scope="module")
def toi() -> tuple[list[dict], Counter]:
    return label_sources.toi_labels(require_data(TOI_CSV), at_ms=1_000)


@pytest.fixture(scope="module")
def taxonomy_text() -> str:
    return require_data(BUS_TXT).read_text(encoding="latin-1")


@pytest.fixture(scope="module")
def spectrum_objects() -> set[str]:
    """Objects that have an observed SMASSII spectrum (names only; nothing is extracted)."""
    with tarfile.open(require_data("smass2/smass2data.tar.gz")) as tar:
        names = [m.name.rsplit("/", 1)[-1] for m in tar.getmembers() if m.isfile()]
    return {object_name(n) for n in names if n.endswith(".[2]") and ".spfit" not in n}


# -- Label records from the real catalogues ----------------------------------------------------------
def test_toi_dispositions_become_model_classes(toi: tuple[list[dict], Counter]) -> None:
    records, counts = toi
    # The 2025-10-04 table: every TOI has a TFOPWG disposition, all six kinds are mapped.
    assert counts == Counter({"PC": 4679, "FP": 1197, "CP": 684, "KP": 583, "APC": 462, "FA": 98})
    assert len(records) == 7703
    by_source = Counter((r["source"], r["label"]) for r in records)
    assert by_source == Counter({("TFOPWG:PC", "PC"): 4679, ("TFOPWG:FP", "EB"): 1197, ("TFOPWG:CP", "PC"): 684,
                                 ("TFOPWG:KP", "PC"): 583, ("TFOPWG:APC", "PC"): 462, ("TFOPWG:FA", "J"): 98})
    wasp126 = [r for r in records if r["object"] == "25155310"]  # WASP-126 b = TOI-114.01, a known planet
    assert [(r["label"], r["source"], round(r["period_days"], 3)) for r in wasp126] == [("PC", "TFOPWG:KP", 3.289)]
    toi216 = sorted(round(r["period_days"], 2) for r in records if r["object"] == "55652896")
    assert toi216 == [17.39, 34.51]  # two planets, two labels
    assert sum(r["period_days"] is None for r in records) == 107  # kept, but they cannot name a signal
    for r in records:
        schemas.encode("Label", r)


def test_skip_leaves_out_a_disposition(toi: tuple[list[dict], Counter], tmp_path: Path) -> None:
    # The real table's comment block, header and first 1,000 TOIs (reading all of it twice is slow).
    lines = require_data(TOI_CSV).read_text().splitlines(keepends=True)
    start = next(i for i, line in enumerate(lines) if not line.startswith("#")) + 1
    part = tmp_path / "toi_part.csv"
    part.write_text("".join(lines[:start + 1000]))
    records, counts = label_sources.toi_labels(part, skip=["apc", "PC"], at_ms=1_000)
    skipped = counts["skipped:APC"] + counts["skipped:PC"]
    assert skipped > 0 and len(records) == 1000 - skipped
    assert {r["source"] for r in records} <= {"TFOPWG:CP", "TFOPWG:KP", "TFOPWG:FP", "TFOPWG:FA"}
    assert all(r in toi[0] for r in records)  # the same records as from the whole table


def test_bus_taxonomy_file_and_csv(taxonomy_text: str, tmp_path: Path) -> None:
    records = label_sources.bus_labels(require_data(BUS_TXT), at_ms=5)
    by_object = {r["object"]: r["label"] for r in records}
    assert len(records) == 1443  # 1,447 rows, 4 unclassified ("-")
    assert by_object["1"] == "C" and by_object["4"] == "V" and by_object["21"] == "Xk"
    assert by_object["523"] == "X"  # a row with extra tabs: the class is the last field
    assert by_object["1999 FB"] == "Q" and by_object["1998 WZ6"] == "V"  # provisional designations
    assert {r["source"] for r in records} == {"SMASSII"} and {r["task"] for r in records} == {"smass"}

    # The trainer's own parser reads the same classes from the same file.
    smass = pytest.importorskip("training.smass")
    trainer = {o: e.bus for o, e in smass.parse_taxonomy(taxonomy_text).items() if e.bus}
    assert trainer == by_object

    csv = tmp_path / "curated.csv"
    csv.write_text("# corrections\nobject,class\n(1) Ceres,Cb\n1996 UK,Sq\n1998WZ6, V\n")
    assert [(r["object"], r["label"], r["source"]) for r in label_sources.bus_labels(csv)] == [
        ("1", "Cb", "curated"), ("1996 UK", "Sq", "curated"), ("1998 WZ6", "V", "curated")]

    csv.write_text("object,class\n1,Cb\n2,Xq\n3,s\n")
    with pytest.raises(label_sources.LabelInputError, match="line 3.*'Xq'.*line 4.*'s'"):
        label_sources.bus_labels(csv)


def test_dry_run_and_missing_broker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("SKYSTREAM_BROKER", raising=False)
    csv = tmp_path / "c.csv"
    csv.write_text("1,Cb\n2,B\n")
    assert run_cli("labels", "publish", "--bus", str(csv), "--dry-run") == 0
    assert "2 asteroid labels" in capsys.readouterr().out
    assert run_cli("labels", "publish", "--bus", str(csv)) == 2
    assert "no broker configured" in capsys.readouterr().err
    assert run_cli("labels", "dump") == 2
    err = capsys.readouterr().err
    assert "--broker" in err and "SKYSTREAM_BROKER" in err
    csv.write_text("1,Zz\n")
    assert run_cli("labels", "publish", "--bus", str(csv), "--dry-run") == 2
    assert "unknown Bus class" in capsys.readouterr().err


# -- the labels topic --------------------------------------------------------------------------------
def test_publish_dump_load_round_trip(embedded_broker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    broker = embedded_broker.bootstrap
    monkeypatch.delenv("SKYSTREAM_BROKER", raising=False)
    assert run_cli("labels", "publish", "--toi", str(require_data(TOI_CSV)), "--broker", broker) == 0
    assert "published 7703" in capsys.readouterr().out
    monkeypatch.setenv("SKYSTREAM_BROKER", broker)  # the environment works as well as --broker
    assert run_cli("labels", "publish", "--bus", str(require_data(BUS_TXT))) == 0
    assert "published 1443" in capsys.readouterr().out

    # Corrections, newer than everything above: WASP-126 b relabelled (same signal: period within 1 %),
    # Ceres reclassified.
    newer = 2**62
    corrections = [
        {"task": "tess", "object": "25155310", "label": "EB", "source": "test", "file_id": None,
         "period_days": 3.2890, "at_ms": newer},
        {"task": "smass", "object": "1", "label": "Cb", "source": "test", "file_id": None, "period_days": None,
         "at_ms": newer},
    ]
    assert asyncio.run(label_sources.publish_labels(broker, corrections)) == 2

    out = tmp_path / "labels.jsonl"
    assert run_cli("labels", "dump", "--out", str(out)) == 0
    assert "9148 labels written" in capsys.readouterr().err
    dumped = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(dumped) == 9148 and dumped[-2:] == corrections  # oldest first, exactly as published
    for r in dumped:
        schemas.validate("Label", r)

    from_topic = feedback.load_labels(broker)
    from_file = feedback.load_labels(out)
    assert from_topic == from_file
    # 7,703 TOIs hold 3 pairs on one star within 1 % in period (one signal each); the corrections
    # replace two labels.
    assert len(from_topic) == 7700 + 1443
    assert [(r["label"], r["source"]) for r in from_topic if r["object"] == "25155310"] == [("EB", "test")]
    assert [r["label"] for r in from_topic if r["task"] == "smass" and r["object"] == "1"] == ["Cb"]
    assert len(feedback.load_labels(out, task="smass")) == 1443

    latest_out = tmp_path / "latest.jsonl"
    assert run_cli("labels", "dump", "--latest", "--task", "tess", "--out", str(latest_out)) == 0
    assert len(latest_out.read_text().splitlines()) == 7700


def test_load_labels_rejects_bad_sources(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"task": "smass", "object": "1", "label": "C", "source": "x", "at_ms": 1}\n{"task": "smass"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: not a Label"):
        feedback.load_labels(bad)
    with pytest.raises(ValueError, match="neither an existing JSON-lines file nor a broker"):
        feedback.load_labels(str(tmp_path / "missing.jsonl"))


def test_dedup_keeps_newest_per_signal() -> None:
    def label(obj: str, lab: str, period: float | None, at: int) -> dict:
        return {"task": "tess", "object": obj, "label": lab, "source": "t", "file_id": None,
                "period_days": period, "at_ms": at}

    labels = [label("7", "PC", 3.2888, 1), label("7", "EB", 3.2895, 2), label("7", "J", 6.5, 1),
              label("7", "J", None, 1), label("8", "PC", 3.2888, 5), label("8", "EB", 3.2888, 5)]
    kept = feedback.dedup_labels(labels)
    assert [(r["object"], r["label"], r["period_days"]) for r in kept] == [
        ("7", "EB", 3.2895), ("7", "J", 6.5), ("7", "J", None), ("8", "EB", 3.2888)]  # ties: the later one


# -- merges ------------------------------------------------------------------------------------------
def test_merge_smass(taxonomy_text: str, spectrum_objects: set[str]) -> None:
    base = {obj: bus for _, obj, bus in label_sources.parse_bus_lines(taxonomy_text)}
    assert len(spectrum_objects) == 1341 and spectrum_objects <= set(base)
    del base["4"]  # pretend Vesta were missing from the catalogue: a label adds it (it has a spectrum)

    def label(obj: str, lab: str, at: int) -> dict:
        return {"task": "smass", "object": obj, "label": lab, "source": "curated", "file_id": None,
                "period_days": None, "at_ms": at}

    labels = [label("1", "Cb", 2), label("1", "B", 1),  # the newer one wins, whatever the order
              label("2", "B", 1),  # already B
              label("4", "V", 1),  # added: not in the catalogue, has a spectrum
              label("99999", "S", 1),  # not in the catalogue, no spectrum: trains nothing
              label("3", "Q", 1),  # a class the trainer cannot learn
              {**label("25155310", "PC", 1), "task": "tess"}]  # other task
    merged = feedback.merge_smass(labels, base, spectrum_objects, known_classes=set(label_sources.BUS_CLASSES) - {"Q"})
    assert merged.data["1"] == "Cb" and merged.data["2"] == "B" and merged.data["4"] == "V"
    assert merged.data["3"] == "Sk" and "99999" not in merged.data
    r = merged.report
    assert (r["labels"], r["applied"], r["changed"], r["added"], r["confirmed"]) == (5, 3, 1, 1, 1)
    assert r["transitions"] == {"C->Cb": 1, "none->V": 1}
    assert r["ignored"] == {"no_spectrum": 1, "unknown_class": 1}
    assert merged.sources == {"1": "curated", "2": "curated", "4": "curated"}
    assert "3 applied (1 changed, 1 added, 1 unchanged)" in merged.summary()
    # Untouched objects keep the catalogue's class; entries with a .bus attribute work the same.
    assert sum(merged.data[o] == base[o] for o in base) == len(base) - 1

    class Entry:
        def __init__(self, bus: str) -> None:
            self.bus = bus

    assert feedback.merge_smass(labels, {o: Entry(b) for o, b in base.items()}, spectrum_objects,
                                known_classes=set(label_sources.BUS_CLASSES) - {"Q"}).data == merged.data


def test_merge_tess_matches_tic_and_period(toi: tuple[list[dict], Counter]) -> None:
    records, _ = toi
    fp = next(r for r in records if r["source"] == "TFOPWG:FP" and r["period_days"])
    examples = {
        "tic_id": np.array([25155310, 55652896, 55652896, 55652896, 1629601, 25155310, int(fp["object"])]),
        "Period": np.array([3.2900, 17.40, 34.40, 25.0, 3.0, 6.5780, fp["period_days"] * 1.004], np.float32),
        "Disposition": np.array(["J", "PC", "EB", "J", "J", "EB", "PC"]),
        "label": np.array([2, 0, 1, 2, 2, 1, 0]),
        "global_view": np.zeros((7, 201), np.float32),
    }
    merged = feedback.merge_tess(records, examples)
    # WASP-126 b (KP) -> PC; TOI-216 .02 and .01 (CP) -> PC (34.40 d is 0.3 % from 34.51 d); 25 d and a
    # non-TOI star unchanged; a 2x alias only with aliases=True; an FP -> EB.
    assert list(merged.data["Disposition"]) == ["PC", "PC", "PC", "J", "J", "EB", "EB"]
    assert list(merged.data["label"]) == [0, 0, 0, 2, 2, 1, 1]
    assert list(merged.sources) == ["TFOPWG:KP", "TFOPWG:CP", "TFOPWG:CP", "", "", "", "TFOPWG:FP"]
    assert merged.data["global_view"] is examples["global_view"]  # other columns are shared, not copied
    assert list(examples["Disposition"]) == ["J", "PC", "EB", "J", "J", "EB", "PC"]  # input untouched
    r = merged.report
    assert (r["examples_matched"], r["changed"], r["confirmed"], r["applied"]) == (4, 3, 1, 4)
    assert r["transitions"] == {"J->PC": 1, "EB->PC": 1, "PC->EB": 1}
    # Period-less TOIs cannot name a signal (one per star after deduplication).
    assert r["ignored"]["no_period"] == len({x["object"] for x in records if x["period_days"] is None})

    with_aliases = feedback.merge_tess(records, examples, aliases=True)
    assert list(with_aliases.data["Disposition"])[5] == "PC" and with_aliases.sources[5] == "TFOPWG:KP"
