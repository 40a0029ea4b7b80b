"""Features -> predictions with the serving models; the same code for the workers and `skystream score`."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from stream import kinds
from stream.errors import Rejected, Unavailable
from stream.models.hot_swap import verified_model
from stream.models.registry import LocalRegistry, RegistryError, open_registry
from stream.runtime.metrics import (
    INFERENCE_BATCH_SIZE,
    INFERENCE_SECONDS,
    MODEL_REFUSED,
    PREDICTION_SCORE,
    PREDICTIONS,
    set_model,
)
from stream.scoring.drift import DriftMonitor
from stream.scoring.onnx_model import OnnxModel
from stream.settings import Settings

__all__ = ["Scorer", "scorer_for", "top_label"]

log = logging.getLogger(__name__)


class Scorer:
    """Holds the serving model of each task and scores batches of feature records.

    Models load lazily from the registry's champion. ``swap`` replaces a task's model atomically:
    a batch in progress finishes with the model it started with.
    """

    def __init__(self, registry: LocalRegistry, toi: Any = None, settings: Settings | None = None) -> None:
        self.registry = registry
        self.toi = toi
        self.settings = settings or Settings()  # operator settings the alert policy reads
        self._models: dict[str, OnnxModel] = {}
        self._drift: dict[str, DriftMonitor] = {}
        self._lock = threading.Lock()

    def model(self, task: str) -> OnnxModel:
        """The verified champion model of ``task``, loaded on first use; Unavailable when none can serve."""
        with self._lock:
            if task not in self._models:
                try:
                    m = verified_model(self.registry.uri, task, self.registry.champion(task),
                                       signing_key=self.settings.model_signing_key)
                except RegistryError as exc:
                    raise Unavailable("no-model", str(exc)) from None
                except ConnectionError as exc:  # S3Unavailable is one
                    raise Unavailable("registry-unavailable", f"{self.registry.uri}: {exc}") from None
                except Rejected as exc:
                    # Not the inputs' fault either: they wait for a champion that can serve.
                    MODEL_REFUSED.labels(task=task, reason=exc.reason).inc()
                    raise Unavailable("no-model", f"the {task} champion was refused ({exc.reason}): {exc}") from None
                self._install(m)
                log.info("serving %s model %s v%s", task, m.name, m.version)
            return self._models[task]

    def serving(self, task: str) -> OnnxModel | None:
        """The model serving ``task`` now, None before the first load."""
        with self._lock:
            return self._models.get(task)

    def swap(self, model: OnnxModel) -> None:
        """Serve ``model`` from now on (a hot swap)."""
        with self._lock:
            self._install(model)

    def _install(self, model: OnnxModel) -> None:
        # A new model brings its own drift reference (its training population).
        self._models[model.task] = model
        ref = model.metadata.get("drift_reference")
        if ref:
            self._drift[model.task] = DriftMonitor(model.task, ref)
        else:
            self._drift.pop(model.task, None)
        set_model(model.task, model.name, model.version)

    def score(self, kind: str, records: list[dict[str, Any]]) -> list[dict[str, Any] | Rejected]:
        """One result per record, in order: a Prediction record, or the Rejected that explains why not.

        The batch runs in one inference call; if it fails, records are retried one by one so a
        bad record costs only its own prediction.
        """
        spec = kinds.by_name(kind)
        task = spec.task
        model = self.model(task)
        t0 = time.perf_counter()
        try:
            results: list[dict[str, Any] | Rejected] = list(spec.predict(model, records, self.toi))
        except Exception:
            results = []
            for rec in records:
                try:
                    results.extend(spec.predict(model, [rec], self.toi))
                except Rejected as exc:
                    results.append(exc)
                except Exception as exc:  # a model/feature mismatch we did not foresee: still one dead letter
                    log.exception("scoring failed for %s", rec.get("uri"))
                    results.append(Rejected("scoring-failed", f"{type(exc).__name__}: {exc}"))
        INFERENCE_SECONDS.labels(task=task).observe(time.perf_counter() - t0)
        INFERENCE_BATCH_SIZE.labels(task=task).observe(len(records))
        drift = self._drift.get(task)
        for rec, r in zip(records, results, strict=True):
            if isinstance(r, dict):
                label, score = top_label(r)
                PREDICTIONS.labels(task=task, label=label).inc()
                PREDICTION_SCORE.labels(task=task).observe(score)
                if drift is not None:
                    drift.observe(rec, label)
        return results


def scorer_for(settings: Settings) -> Scorer:
    """The Scorer of the workers, `skystream score` and `skystream rescore`: the registry's champions
    and the TOI catalogue (so a light curve scored by any of them carries the same ``known_toi``)."""
    from stream.scoring import toi

    return Scorer(open_registry(settings.registry), toi=toi.load_default(settings.toi_table), settings=settings)


def top_label(prediction: dict[str, Any]) -> tuple[str, float]:
    """The label a prediction is counted under in metrics, and its probability."""
    if prediction["kind"] == "spectrum":
        return prediction["main_group"], max(prediction["probabilities"].values())
    signals = prediction.get("signals") or []
    if not signals:
        return "no-signal", 1.0
    best = max(signals, key=lambda s: s["planet_probability"])
    return ("planet-candidate" if best["planet_probability"] >= 0.5 else
            "astrophysical" if best["triage_probability"] >= 0.5 else "junk"), best["planet_probability"]
