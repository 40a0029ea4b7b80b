"""Cross-survey check: spectra from other instruments scored with the real `skystream score`.

    python tests/benchmarks/bench_cross_survey.py [--version N] [--registry DIR]               # SMASS I
    python tests/benchmarks/bench_cross_survey.py --set mahlke2022 [--version N] [--registry DIR]

--set mahlke2022 (issue 17): the 718 visible spectra of ../shared/data/mahlke2022 (30 sources, Mahlke et
al. 2022 classes in main groups; the 34 Q rows apart, as SMASSII has none), written as two-column
tables (training.smass.cross_survey.iter_mahlke2022) and scored the same way; prints the same numbers,
the share of all scored spectra wrong with p > 0.9, and accuracy and ECE per source (40+ spectra).

SMASS I (the default, issue 13):

Unpacks ../shared/data/smass1/smass1data.tar.gz into a temporary directory, keeps the spectra of asteroids
with a Bus class in one of the main groups (labels by asteroid number from smass2/Bus.Taxonomy.txt), runs
`python -m stream.cli score FILES --registry R` (R: a temporary copy of the bundled registry with
``--version`` as champion, default the bundled champion), and prints: weighted F1 of the main group,
the share rejected, top-class ECE (calibrated probabilities when the model has a temperature), border
flag rate, and confident (> 0.9) answers wrong across a border (S/Other, C/X) without a flag. Then a
spectrum cut to 0.50-0.82 µm is scored: a coverage-mask model scores it, an older one rejects it.
Prints numbers; asserts nothing. The models were trained on SMASSII spectra of most of these asteroids:
this measures the instrument change (out-of-object numbers: docs/experiments/issue13/RESULTS.md).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from stream.features.spectra import object_name  # noqa: E402
from stream.models.registry import BUNDLED  # noqa: E402
from training.smass.cross_survey import (  # noqa: E402
    CONFIDENT,
    cross_survey_metrics,
    iter_mahlke2022,
    iter_smass1,
    main_group_labels,
)

DATA = ROOT.parent / "shared" / "data"
SMASS1 = DATA / "smass1" / "smass1data.tar.gz"
TAXONOMY = DATA / "smass2" / "Bus.Taxonomy.txt"
GROUPS = ["C", "S", "X", "Other"]


def registry_with_champion(root: Path, source: Path, version: str | None) -> Path:
    """A copy of ``source``'s smass task under ``root`` with ``version`` as champion (default: as shipped)."""
    dest = root / "registry"
    shutil.copytree(source / "smass", dest / "smass")
    if version:
        champion = json.loads((dest / "smass" / "champion.json").read_text())
        champion = {"version": version, "history": [*champion["history"], version]}
        (dest / "smass" / "champion.json").write_text(json.dumps(champion))
    return dest


def skystream_score(files: list[Path], registry: Path) -> list[dict]:
    """The real command, one JSON line per file."""
    out = subprocess.run([sys.executable, "-m", "stream.cli", "score", *map(str, files), "--registry", str(registry)],
                         cwd=ROOT, capture_output=True, text=True, check=True, env=_env())
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


def _env() -> dict[str, str]:
    import os

    return {**os.environ, "PYTHONPATH": str(ROOT)}


def cut_file(source: bytes, lo: float, hi: float) -> bytes:
    """The rows of a SMASS table that cover ``lo``-``hi`` µm: those inside, and the nearest one beyond each end
    (SMASS I tables are in Å, SMASSII in µm)."""
    lines = [line for line in source.decode().splitlines() if line.split()]
    scale = 1e4 if float(lines[0].split()[0]) > 100 else 1.0
    w = [float(line.split()[0]) / scale for line in lines]
    first = max(i for i, x in enumerate(w) if x <= lo)
    last = min(i for i, x in enumerate(w) if x >= hi)
    rows = lines[first:last + 1]
    return ("\n".join(rows) + "\n").encode()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--version", help="smass version to make champion in the copy (default: the bundled champion)")
    ap.add_argument("--registry", type=Path, default=BUNDLED, help="registry to copy (default: the bundled one)")
    ap.add_argument("--set", choices=("smass1", "mahlke2022"), default="smass1", help="which spectra (default smass1)")
    args = ap.parse_args()
    if args.set == "mahlke2022":
        mahlke(args)
        return
    labels = main_group_labels(TAXONOMY)
    with tempfile.TemporaryDirectory(prefix="bench-cross-survey-") as tmp:
        tmp = Path(tmp)
        inbox = tmp / "smass1"
        inbox.mkdir()
        files, truth, n_files = [], [], 0
        for name, data in iter_smass1(SMASS1):
            n_files += 1
            obj = object_name(name)
            if obj in labels:
                (inbox / name).write_bytes(data)
                files.append(inbox / name)
                truth.append(labels[obj][1])
        registry = registry_with_champion(tmp, args.registry, args.version)
        results = skystream_score(files, registry)
        scored = [(r, t) for r, t in zip(results, truth, strict=True) if not r.get("rejected")]
        rejected = [r for r in results if r.get("rejected")]
        version = scored[0][0]["model_version"] if scored else "?"
        m = cross_survey_metrics([r for r, _ in scored], [t for _, t in scored], GROUPS, n_rejected=len(rejected))

        first = next(name for name, _ in iter_smass1(SMASS1) if object_name(name) in labels)
        cut = tmp / "cut" / first
        cut.parent.mkdir()
        cut.write_bytes(cut_file((inbox / first).read_bytes(), 0.50, 0.82))
        [cut_result] = skystream_score([cut], registry)

    print(f"smass v{version} via `skystream score`: SMASS I, {len(files)} spectra with a main-group label "
          f"(of {n_files} files)")
    print(f"  weighted F1 (main group)        {m['weighted_f1']:.4f}   accuracy {m['accuracy']:.4f}")
    print("  per-class F1                    " + "  ".join(f"{k} {v:.3f}" for k, v in m["per_class_f1"].items()))
    print(f"  confusion (rows true {GROUPS})  {m['confusion_matrix']['counts']}")
    print(f"  S called Other                  {m['s_called_other']}")
    print(f"  rejected                        {len(rejected)} ({m['rejected_fraction']:.1%})"
          + (f": {sorted({r['reason'] for r in rejected})}" if rejected else ""))
    print(f"  top-class ECE (15 bins)         {m['ece_top_class']:.3f}   "
          f"uncalibrated {m['ece_top_class_uncalibrated']:.3f}")
    print(f"  border flagged                  {m['border_flagged_fraction']:.1%}")
    print(f"  confident (>{CONFIDENT}) wrong across a border: "
          f"{m[f'confident_wrong_across_border (p>{CONFIDENT})']}, without a flag: "
          f"{m[f'confident_wrong_across_border_unflagged (p>{CONFIDENT})']}")
    state = (f"rejected ({cut_result['reason']})" if cut_result.get("rejected")
             else f"scored: {cut_result['main_group']} (border {cut_result.get('border')})")
    state += f", true {labels[object_name(first)][0]} ({labels[object_name(first)][1]})"
    print(f"  {first} cut to 0.50-0.82 µm    {state}")


def mahlke(args: argparse.Namespace) -> None:
    """The Mahlke et al. (2022) cross-survey set through `skystream score`."""
    rows = [r for r in iter_mahlke2022() if r.group in GROUPS]
    with tempfile.TemporaryDirectory(prefix="bench-cross-survey-") as tmp:
        tmp = Path(tmp)
        files = []
        for r in rows:
            path = tmp / r.name
            path.parent.mkdir(exist_ok=True)
            path.write_bytes(r.table)
            files.append(path)
        results = skystream_score(files, registry_with_champion(tmp, args.registry, args.version))
    scored = [(res, r) for res, r in zip(results, rows, strict=True) if not res.get("rejected")]
    rejected = [res for res in results if res.get("rejected")]
    m = cross_survey_metrics([res for res, _ in scored], [r.group for _, r in scored], GROUPS,
                             n_rejected=len(rejected))
    version = scored[0][0]["model_version"] if scored else "?"
    print(f"smass v{version} via `skystream score`: mahlke2022, {len(rows)} spectra in the main groups "
          f"({sum(r.group == 'Q' for r in iter_mahlke2022())} Q rows apart), {len({r.source for r in rows})} sources")
    print(f"  weighted F1 (main group)        {m['weighted_f1']:.4f}   accuracy {m['accuracy']:.4f}")
    print("  per-class F1                    " + "  ".join(f"{k} {v:.3f}" for k, v in m["per_class_f1"].items()))
    print(f"  confusion (rows true {GROUPS})  {m['confusion_matrix']['counts']}")
    print(f"  rejected                        {len(rejected)} ({m['rejected_fraction']:.1%})"
          + (f": {sorted({r['reason'] for r in rejected})}" if rejected else ""))
    print(f"  top-class ECE (15 bins)         {m['ece_top_class']:.3f}   "
          f"uncalibrated {m['ece_top_class_uncalibrated']:.3f}")
    confident_wrong = sum(w["confidence"] > CONFIDENT for w in m["wrong"])
    print(f"  wrong with p > {CONFIDENT}            {confident_wrong / m['n_scored']:.1%} "
          f"of the scored ({confident_wrong})")
    print(f"  border flagged                  {m['border_flagged_fraction']:.1%}")
    by_source: dict[str, list[tuple[dict, str]]] = {}
    for res, r in scored:
        by_source.setdefault(r.source, []).append((res, r.group))
    for source, pairs in sorted(by_source.items(), key=lambda kv: -len(kv[1])):
        if len(pairs) >= 40:
            ms = cross_survey_metrics([res for res, _ in pairs], [g for _, g in pairs], GROUPS)
            print(f"  source {source:>3} ({len(pairs):3d} spectra)     accuracy {ms['accuracy']:.3f}   "
                  f"ECE {ms['ece_top_class']:.3f}")


if __name__ == "__main__":
    main()
