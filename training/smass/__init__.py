"""`skystream train smass`: asteroid main groups (C/S/X/Other) and Bus classes from SMASSII spectra.

Data: SMASSII visible spectra (Bus & Binzel 2002, smass.mit.edu/smass.html: ``smass2data.tar.gz`` and
``Bus.Taxonomy.txt``), read from ``DEFAULT_DATA`` unless ``--data-dir`` says otherwise. Features come
from stream.features.spectra, the same code the stream runs. All 1,341 spectra have a Bus class (none
is Q or unclassified; such objects would be skipped and counted).

Model: a functional Keras model holding ``members`` small 1D CNNs (input: normalised reflectance on
the grid, plus its derivative computed inside the model) whose softmax outputs are averaged; two
heads, main group and Bus class. One ONNX file, ~0.4 MB. The protocol (``ModelConfig``) was chosen
by 4-fold CV on an 80 % development split only; docs/experiments/smass-protocol.md has the rounds,
the variants tried and their numbers.

Since smass v2 (issue 13) the model also takes ``coverage`` (1 where the grid point lies inside the data)
and the default protocol trains with random crops and smooth instrument-like distortions, so spectra
from other instruments and narrower ranges (≥ ``MIN_COVERAGE_MASKED`` of the grid) are scored; the
metadata carries a temperature and the border-flag rule, and the SMASS I cross-instrument check
(training/smass/cross_survey.py). docs/experiments/issue13/RESULTS.md has the research.

A run is load → fit (the final model on all spectra) → export to ONNX and verify against Keras →
evaluate (stratified k-fold CV of the same protocol, which includes the development 80 %, so read it
as slightly optimistic) → publish (through the promotion gate with ``--with-labels``):

    skystream train smass [--folds 5] [--registry URI | --bundle] [--report PATH] [--threads 2]
    skystream train smass --dev-split --folds 4 --threads 1 --seed S [--config FIELD=VALUE]   # protocol search

One module per step, each importing only steps before it (no import circle): labels (groups, Bus
classes, the taxonomy table); data and model (on labels); augmentation (on model); fitting (on
augmentation); variants, evaluation and calibration; metadata; cross_survey (SMASS I, on labels and
data); pipeline (the run, on all of them). This package re-exports their public names.
"""

from __future__ import annotations

from training.smass.augmentation import augment, augment_with_mask, coverage_rows, grid_sigma, grid_sigmas, tilt
from training.smass.calibration import border_rule
from training.smass.cross_survey import DEFAULT_SMASS1
from training.smass.data import DEFAULT_DATA, SmassData, coverage_masks, development_split, iter_tar_spectra, load_smass
from training.smass.evaluation import cross_validate
from training.smass.fitting import predict, train_model
from training.smass.labels import (
    BUS_CLASS_NAMES,
    BUS_TO_GROUP,
    GROUP_NAMES,
    MAIN_GROUPS,
    TaxonomyEntry,
    bus_to_group_matrix,
    parse_taxonomy,
)
from training.smass.metadata import build_metadata
from training.smass.model import COVERAGE_NAME, INPUT_NAME, MODEL_NAME, TASK, ModelConfig, build_model, override_config
from training.smass.pipeline import (
    Evaluation,
    Exported,
    Loaded,
    add_arguments,
    check_arguments,
    evaluate,
    evaluate_cross_survey,
    evaluate_protocol,
    export_and_verify,
    fit,
    load,
    protocol,
    publish,
    run,
)
from training.smass.variants import survey_variants

__all__ = [
    "BUS_CLASS_NAMES", "BUS_TO_GROUP", "COVERAGE_NAME", "DEFAULT_DATA", "DEFAULT_SMASS1", "GROUP_NAMES",
    "INPUT_NAME", "MAIN_GROUPS", "MODEL_NAME", "TASK", "Evaluation", "Exported", "Loaded", "ModelConfig",
    "SmassData", "TaxonomyEntry", "add_arguments", "augment", "augment_with_mask", "border_rule", "build_metadata",
    "build_model", "bus_to_group_matrix", "check_arguments", "coverage_masks", "coverage_rows", "cross_validate",
    "development_split", "evaluate", "evaluate_cross_survey", "evaluate_protocol", "export_and_verify", "fit",
    "grid_sigma", "grid_sigmas", "iter_tar_spectra", "load", "load_smass", "override_config", "parse_taxonomy",
    "predict", "protocol", "publish", "run", "survey_variants", "tilt", "train_model",
]
