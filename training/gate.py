"""The promotion gate: a retrained candidate replaces the champion only if it is not worse.

Both models are scored by onnxruntime (the serving code path, stream.inference.OnnxModel) on the
SAME fixed evaluation set, with the same metric function, at gate time: the champion's stored
metrics are not reused, because they may come from another split, other labels or other code.

The rule, for the primary metric m (higher is better unless ``higher_is_better=False``) and an
absolute tolerance t >= 0 on m's own scale:

    improvement = m(candidate) - m(champion)        (champion - candidate when lower is better)
    accepted    = improvement >= -t                 (both values finite)

So t = 0 accepts a tie or better and refuses any loss; t = 0.005 tolerates a loss of 0.005 in m.
No champion in the registry: the candidate is accepted (there is nothing to compare with), and the
decision says so. A champion that cannot be scored on the evaluation set (other inputs, corrupt
file) refuses the candidate: the gate cannot tell, and a human can still `skystream models promote`.

The evaluation set is a deterministic held-out split by object identity (``holdout_mask``:
sha256(salt/id) below a fraction; independent of row order and of new objects joining the data, so
an object never changes side), identified by a sha256 of its inputs, labels and ids that is stored
in the metadata. The split must be left out of training of every model the gate compares: a
champion whose metadata does not declare the same split may have trained on the evaluation set,
which the decision flags (its score is then optimistic and the gate is stricter than intended).

    eval_set, train_mask = make_eval_set({"reflectance": x}, y, ids=objects)
    ... train the candidate on train_mask rows, export ONNX ...
    decision = gate(registry, "smass", onnx_bytes, eval_set, argmax_metrics("main_group"), "weighted_f1")
    print(decision.table())
    version = publish_gated(registry, "smass", onnx_bytes, metadata, decision)   # None when refused
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "add_gate_arguments",
    "EvalSet",
    "GateDecision",
    "argmax_metrics",
    "compare",
    "evaluate_onnx",
    "gate",
    "gate_and_publish",
    "gate_metadata",
    "holdout_mask",
    "make_eval_set",
    "publish_gated",
]

DEFAULT_SALT = "skystream-gate-v1"
DEFAULT_FRACTION = 0.2
RULE = "accept iff improvement >= -tolerance, improvement = candidate - champion (champion - candidate " \
       "when lower is better), both finite; no champion: accept"

MetricFn = Callable[[Mapping[str, np.ndarray], np.ndarray], Mapping[str, float]]


# -- evaluation set ----------------------------------------------------------------------------------
def holdout_mask(ids: Sequence[Any], fraction: float = DEFAULT_FRACTION, salt: str = DEFAULT_SALT) -> np.ndarray:
    """True for the rows whose id falls in the held-out split: sha256(salt/id) read as a number in
    [0, 1) below ``fraction``. Rows with equal ids (e.g. signals of one TIC) fall on the same side."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")

    def position(i: Any) -> float:
        """A stable pseudo-random position in [0, 1) for example ``i``."""
        return int.from_bytes(hashlib.sha256(f"{salt}/{i}".encode()).digest()[:8], "big") / 2.0**64

    return np.array([position(i) < fraction for i in ids], dtype=bool)


def _digest(inputs: Mapping[str, np.ndarray], labels: np.ndarray, ids: Sequence[Any] | None) -> str:
    h = hashlib.sha256()
    for name in sorted(inputs):
        x = np.ascontiguousarray(inputs[name], dtype=np.float32)  # what the models are fed
        h.update(f"{name}|{x.shape}|".encode())
        h.update(x.tobytes())
    y = np.ascontiguousarray(labels)
    h.update(f"labels|{y.dtype.str}|{y.shape}|".encode())
    h.update(y.tobytes())
    if ids is not None:
        h.update(b"ids|" + "\n".join(map(str, ids)).encode())
    return h.hexdigest()


@dataclass(frozen=True)
class EvalSet:
    """A fixed evaluation set: model inputs by name, labels, row ids, and how it was drawn."""

    inputs: dict[str, np.ndarray]
    labels: np.ndarray
    ids: tuple[str, ...] | None = None
    split: dict[str, Any] = field(default_factory=dict)
    name: str = "held-out split"
    sha256: str = ""

    def __post_init__(self) -> None:
        n = len(self.labels)
        if any(len(v) != n for v in self.inputs.values()) or (self.ids is not None and len(self.ids) != n):
            raise ValueError("evaluation inputs, labels and ids must have one row per example")
        object.__setattr__(self, "sha256", _digest(self.inputs, self.labels, self.ids))

    def __len__(self) -> int:
        return len(self.labels)

    def describe(self) -> dict[str, Any]:
        """Name, hash, size and split of the evaluation set, for the report."""
        return {"name": self.name, "sha256": self.sha256, "n": len(self), "split": self.split}


def make_eval_set(inputs: Mapping[str, np.ndarray], labels: np.ndarray, ids: Sequence[Any],
                  fraction: float = DEFAULT_FRACTION, salt: str = DEFAULT_SALT,
                  name: str = "held-out split") -> tuple[EvalSet, np.ndarray]:
    """(the evaluation set, mask of the rows left for training) from all the data and its row ids."""
    held = holdout_mask(ids, fraction, salt)
    if not held.any():
        raise ValueError(f"the held-out split ({fraction:.0%}) of {len(held)} rows is empty")
    split = {"rule": "sha256(salt + '/' + id)[:8] / 2**64 < fraction", "salt": salt, "fraction": fraction}
    eval_set = EvalSet({k: np.asarray(v)[held] for k, v in inputs.items()}, np.asarray(labels)[held],
                       tuple(str(i) for i, h in zip(ids, held, strict=True) if h), split, name)
    return eval_set, ~held


# -- scoring -----------------------------------------------------------------------------------------
def evaluate_onnx(onnx_bytes: bytes, inputs: Mapping[str, np.ndarray], batch_size: int = 1024,
                  threads: int = 1) -> dict[str, np.ndarray]:
    """Every output of an ONNX model on ``inputs`` (fed as float32, in batches), by output name."""
    from stream.models.registry import ModelVersion
    from stream.scoring.onnx_model import OnnxModel

    model = OnnxModel(ModelVersion("gate", "eval", onnx_bytes, {}), threads=threads)
    missing = set(model.input_names) - set(inputs)
    if missing:
        raise ValueError(f"the model needs inputs {model.input_names}; the evaluation set has {sorted(inputs)}")
    n = len(next(iter(inputs.values())))
    parts: dict[str, list[np.ndarray]] = {}
    for start in range(0, n, batch_size):
        out = model.run({k: np.asarray(inputs[k])[start:start + batch_size] for k in model.input_names})
        for k, v in out.items():
            parts.setdefault(k, []).append(v)
    return {k: np.concatenate(v) for k, v in parts.items()}


def argmax_metrics(output: str) -> MetricFn:
    """A metric function for a class-probability output: weighted F1, macro F1 and accuracy of the argmax."""

    def metrics(outputs: Mapping[str, np.ndarray], labels: np.ndarray) -> dict[str, float]:
        """Weighted F1, macro F1 and accuracy of the argmax of ``output``."""
        from sklearn.metrics import accuracy_score, f1_score

        pred = np.asarray(outputs[output]).argmax(axis=1)
        return {"weighted_f1": float(f1_score(labels, pred, average="weighted", zero_division=0)),
                "macro_f1": float(f1_score(labels, pred, average="macro", zero_division=0)),
                "accuracy": float(accuracy_score(labels, pred))}

    return metrics


# -- the decision ------------------------------------------------------------------------------------
@dataclass
class GateDecision:
    """Whether the candidate may replace the champion, and the numbers that decided it."""

    accepted: bool
    primary: str
    candidate: float
    champion: float | None  # None: no champion (or it could not be scored)
    delta: float | None  # improvement of the candidate (positive = better), see RULE
    tolerance: float
    higher_is_better: bool
    reason: str
    candidate_metrics: dict[str, float] = field(default_factory=dict)
    champion_metrics: dict[str, float] | None = None
    champion_version: str | None = None
    eval_set: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    delta_interval: tuple[float, float] | None = None  # paired bootstrap 95 % interval of delta (informative)
    task: str = ""

    def table(self) -> str:
        """Both models' metrics side by side, the rule, and the decision."""
        from stream.ops.tables import table

        champ = self.champion_metrics or {}
        names = [self.primary] + sorted((set(self.candidate_metrics) | set(champ)) - {self.primary})

        def fmt(v: float | None) -> str:
            """A metric with four decimals, or ``-`` when missing."""
            return "-" if v is None else f"{v:.4f}"

        rows = []
        for name in names:
            c, p = self.candidate_metrics.get(name), champ.get(name)
            d = None if c is None or p is None else c - p
            rows.append([name + (" *" if name == self.primary else ""), fmt(p), fmt(c),
                         "-" if d is None else f"{d:+.4f}"])
        who = f"champion v{self.champion_version}" if self.champion_version else "champion (none)"
        ev = self.eval_set
        lines = [
            f"promotion gate{' for ' + self.task if self.task else ''}: primary metric {self.primary} "
            f"({'higher' if self.higher_is_better else 'lower'} is better), tolerance {self.tolerance:g}; "
            f"evaluation set: {ev.get('name', '?')}, {ev.get('n', '?')} examples, "
            f"sha256 {str(ev.get('sha256', ''))[:12]}",
            table(rows, ["metric", who, "candidate", "candidate - champion"]),
        ]
        if self.delta is not None:
            lines.append(f"improvement on {self.primary}: {self.delta:+.4f} (accept if >= {0.0 - self.tolerance:+.4f})"
                         + (f"; paired bootstrap 95 % interval [{self.delta_interval[0]:+.4f}, "
                            f"{self.delta_interval[1]:+.4f}]" if self.delta_interval else ""))
        lines += [f"warning: {w}" for w in self.warnings]
        lines.append(f"decision: {'ACCEPTED' if self.accepted else 'REFUSED'}: {self.reason}")
        return "\n".join(lines)


def _finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


def _numbers(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The scalar metrics (a task's metrics may also hold curves and diagrams, which the rule does not read)."""
    return {k: float(v) for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def compare(candidate_metrics: Mapping[str, float], champion_metrics: Mapping[str, float] | None, primary: str,
            tolerance: float = 0.0, *, higher_is_better: bool = True) -> GateDecision:
    """Apply the rule (module doc) to two models' metrics; ``champion_metrics`` None means no champion."""
    if tolerance < 0 or not math.isfinite(tolerance):
        raise ValueError(f"tolerance must be a finite number >= 0, got {tolerance}")
    if primary not in candidate_metrics:
        raise ValueError(f"primary metric {primary!r} is not among the candidate's metrics {sorted(candidate_metrics)}")
    cand = float(candidate_metrics[primary])
    common = dict(primary=primary, candidate=cand, tolerance=tolerance, higher_is_better=higher_is_better,
                  candidate_metrics=_numbers(candidate_metrics))
    if champion_metrics is None:
        return GateDecision(True, champion=None, delta=None, reason="no champion to compare with: accepted as the "
                            "first model of this task", **common)
    champ_metrics = _numbers(champion_metrics)
    champ = champ_metrics.get(primary)
    common["champion_metrics"] = champ_metrics
    if not (_finite(cand) and _finite(champ)):
        return GateDecision(False, champion=champ, delta=None, reason=f"{primary} is not a finite number for "
                            f"both models (candidate {cand}, champion {champ}): cannot tell, refused", **common)
    delta = (cand - champ) if higher_is_better else (champ - cand)
    if delta >= -tolerance:
        verdict = "better than" if delta > 0 else "as good as" if delta == 0 else "within tolerance of"
        reason = (f"candidate {primary} {cand:.4f} is {verdict} the champion's {champ:.4f} "
                  f"(improvement {delta:+.4f} >= {0.0 - tolerance:+.4f})")
        return GateDecision(True, champion=champ, delta=delta, reason=reason, **common)
    reason = (f"candidate {primary} {cand:.4f} is worse than the champion's {champ:.4f} by {-delta:.4f}, "
              f"more than the tolerance {tolerance:g}: the champion keeps serving")
    return GateDecision(False, champion=champ, delta=delta, reason=reason, **common)


def _bootstrap(metric_fn: MetricFn, cand_out: Mapping[str, np.ndarray], champ_out: Mapping[str, np.ndarray],
               labels: np.ndarray, primary: str, n: int, seed: int) -> tuple[float, float]:
    """95 % interval of candidate - champion on ``primary`` under paired resampling of the examples."""
    rng = np.random.default_rng(seed)
    deltas = []
    for _ in range(n):
        idx = rng.integers(0, len(labels), len(labels))
        c = metric_fn({k: v[idx] for k, v in cand_out.items()}, labels[idx])[primary]
        p = metric_fn({k: v[idx] for k, v in champ_out.items()}, labels[idx])[primary]
        deltas.append(c - p)
    lo, hi = np.nanpercentile(deltas, [2.5, 97.5])
    return float(lo), float(hi)


def gate(registry_uri: str, task: str, candidate_onnx: bytes, eval_set: EvalSet, metric_fn: MetricFn,
         primary: str, tolerance: float = 0.0, *, higher_is_better: bool = True, bootstrap: int = 0,
         seed: int = 0) -> GateDecision:
    """Score the registry's champion of ``task`` and the candidate on ``eval_set``; decide by the rule.

    ``metric_fn(outputs_by_name, labels) -> {metric: value}`` is called once per model (and per
    bootstrap draw with ``bootstrap`` > 0, which only adds an informative interval to the table).
    """
    from stream.models.registry import RegistryError, open_registry

    try:
        cand_out = evaluate_onnx(candidate_onnx, eval_set.inputs)
        cand_metrics = dict(metric_fn(cand_out, eval_set.labels))
    except Exception as exc:  # a candidate that cannot be scored is not promoted
        decision = GateDecision(False, primary, float("nan"), None, None, tolerance, higher_is_better,
                                f"the candidate could not be scored on the evaluation set: {exc}")
        decision.eval_set, decision.task = eval_set.describe(), task
        return decision

    registry = open_registry(registry_uri)
    try:
        version = registry.champion(task)
    except RegistryError:
        version = None
    warnings = []
    if version is None:
        decision = compare(cand_metrics, None, primary, tolerance, higher_is_better=higher_is_better)
        decision.reason = (f"no champion for task {task!r} in {registry.uri}: accepted as the first model "
                           "(nothing to compare with)")
    else:
        try:
            champion = registry.load(task, version)
            champ_out = evaluate_onnx(champion.onnx, eval_set.inputs)
            champ_metrics = dict(metric_fn(champ_out, eval_set.labels))
        except Exception as exc:
            decision = compare(cand_metrics, None, primary, tolerance, higher_is_better=higher_is_better)
            decision.accepted, decision.champion_version = False, version
            decision.reason = (f"champion v{version} could not be scored on the evaluation set ({exc}): "
                               "cannot compare, refused (promote by hand with `skystream models promote` if intended)")
            decision.eval_set, decision.task = eval_set.describe(), task
            return decision
        decision = compare(cand_metrics, champ_metrics, primary, tolerance, higher_is_better=higher_is_better)
        decision.champion_version = version
        champion_split = (champion.metadata.get("gate") or {}).get("eval_set", {}).get("split")
        if champion_split != eval_set.split:
            warnings.append(f"champion v{version} does not declare that it was trained without this evaluation "
                            "split; if it saw these examples, its score is optimistic")
        if bootstrap > 0 and _finite(decision.delta):
            lo, hi = _bootstrap(metric_fn, cand_out, champ_out, eval_set.labels, primary, bootstrap, seed)
            decision.delta_interval = (lo, hi) if higher_is_better else (-hi, -lo)
    decision.warnings = warnings
    decision.eval_set = eval_set.describe()
    decision.task = task
    return decision


# -- publication -------------------------------------------------------------------------------------
def gate_metadata(decision: GateDecision) -> dict[str, Any]:
    """The ``gate`` entry of a model's metadata: rule, numbers, evaluation set (with its hash and
    split) and the decision. JSON-ready."""
    def clean(x: Any) -> Any:
        """None for a non-finite float (JSON has no NaN), else ``x``."""
        return None if isinstance(x, float) and not math.isfinite(x) else x

    return {
        "rule": RULE,
        "accepted": decision.accepted,
        "reason": decision.reason,
        "primary": decision.primary,
        "higher_is_better": decision.higher_is_better,
        "tolerance": decision.tolerance,
        "candidate": clean(decision.candidate),
        "champion": clean(decision.champion),
        "improvement": clean(decision.delta),
        "improvement_bootstrap_95": list(decision.delta_interval) if decision.delta_interval else None,
        "candidate_metrics": {k: clean(v) for k, v in decision.candidate_metrics.items()},
        "champion_version": decision.champion_version,
        "champion_metrics": ({k: clean(v) for k, v in decision.champion_metrics.items()}
                             if decision.champion_metrics is not None else None),
        "eval_set": decision.eval_set,
        "warnings": list(decision.warnings),
        "decided_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def publish_gated(registry_uri: str, task: str, onnx_bytes: bytes, metadata: Mapping[str, Any],
                  decision: GateDecision, *, keep_refused: bool = False, announce: bool = True) -> str | None:
    """Publish according to the decision, with ``metadata["gate"] = gate_metadata(decision)``.

    Accepted: published and promoted (and announced on the models topic when a broker is configured),
    unless the champion changed since the gate ran (then published unpromoted: the gate compared
    against another model). Refused: not published (None), or with ``keep_refused`` stored as an
    unpromoted version for inspection. Returns the version written, or None.
    """
    from stream.models.registry import RegistryError, open_registry

    registry = open_registry(registry_uri)
    meta = dict(metadata, gate=gate_metadata(decision))
    promote = decision.accepted
    if promote:
        try:
            current = registry.champion(task)
        except RegistryError:
            current = None
        if current != decision.champion_version:
            meta["gate"]["warnings"].append(f"champion changed from v{decision.champion_version} to v{current} "
                                            "while the gate ran: published without promotion")
            promote = False
    elif not keep_refused:
        return None
    if not promote and not registry.history(task):
        # Without a promotion history the registry serves its newest version: an unpromoted one
        # would be served anyway, so it is not stored.
        import logging

        logging.getLogger(__name__).warning("%s has no promotion history in %s: not storing an unpromoted "
                                            "version", task, registry.uri)
        return None
    version = registry.publish(task, onnx_bytes, meta, promote=promote)
    if promote and announce:
        from stream.models.announce import announce as send
        from stream.models.announce import model_update
        from stream.settings import Settings

        try:
            send(Settings(), model_update(registry, task, version, "promote"))
        except Exception as exc:  # published and promoted; workers load it at their next start
            import logging

            logging.getLogger(__name__).warning("published %s v%s but could not announce it: %s", task, version, exc)
    return version


def gate_and_publish(registry_uri: str, task: str, label: str, onnx_bytes: bytes, metadata: Mapping[str, Any],
                     eval_set: EvalSet, metric_fn: MetricFn, primary: str, *, tolerance: float = 0.0,
                     keep_refused: bool = False, publish: bool = True,
                     log: Callable[[str], None] = print) -> tuple[GateDecision, str | None, str]:
    """The retraining tail of every task: gate the candidate against the champion, print the table,
    publish according to the decision (unless ``publish`` is false) and say what happened.
    Returns (decision, version written or None, registry URI)."""
    from stream.models.registry import open_registry

    decision = gate(registry_uri, task, onnx_bytes, eval_set, metric_fn, primary, tolerance)
    log(decision.table())
    uri = open_registry(registry_uri).uri
    if not publish:
        return decision, None, uri
    version = publish_gated(registry_uri, task, onnx_bytes, metadata, decision, keep_refused=keep_refused)
    if version is None:
        log(f"not published: the champion keeps serving ({uri})")
    else:
        log(f"published {label} as {task} v{version} in {uri}"
            + ("" if decision.accepted else " unpromoted (refused by the gate, kept for inspection)"))
    return decision, version, uri


def add_gate_arguments(parser: Any, task: str, evaluated_on: str, metric: str) -> None:
    """``--with-labels``, ``--gate-tolerance`` and ``--keep-refused`` of `skystream train TASK`: retrain with
    curated labels and publish through the gate. ``evaluated_on``: what the candidate and champion are
    compared on; ``metric``: the gate's primary metric, in words."""
    parser.add_argument("--with-labels", metavar="SOURCE", default=None,
                        help=f"retrain with curated labels (task {task}) from a broker host:port or a JSON-lines "
                             f"dump (`skystream labels dump`); publish only if the candidate is not worse than "
                             f"the registry's champion on {evaluated_on}")
    parser.add_argument("--gate-tolerance", type=float, default=0.0,
                        help=f"with --with-labels: accepted loss in {metric} (default 0)")
    parser.add_argument("--keep-refused", action="store_true",
                        help="with --with-labels: store a refused candidate as an unpromoted version")
