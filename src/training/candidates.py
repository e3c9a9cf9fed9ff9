"""Every fairness mitigation on a trained model's own split, seed and hyperparameters, measured
on the same validation rows with bootstrap 95% intervals (src/training/mitigation.py says what
each candidate is). The CLI is src/mitigation_table.py; the report renders the table."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin

from src.dataset.groups import groups_frame
from src.dataset.spec import DatasetSpec
from src.dataset.table import load_dataset
from src.errors import DataError
from src.fileio import sha256_file
from src.model.artifacts import METRICS_FILE, load_bundle
from src.training.data import Split, carve_holdout, split_dataset
from src.training.features import categorical_indices
from src.training.fit import check_proxies, encode, fit_model
from src.training.mitigation import (
    TRAINABLE,
    Outcome,
    comparison_table,
    fit_choice,
    recommend,
)
from src.training.search import CV_FOLDS, make_model
from src.training.train import DECISION_THRESHOLD

EG_ITERATIONS = 20  # fairlearn's default is 50; each iteration fits one LightGBM model or more
EG_FITS_PER_ROUND = 1.6  # measured on this data: the progress line's estimate
SLOW_FACTOR = 10  # a candidate this many times slower than the plain fit is flagged


class CategoricalLGBM(lgb.LGBMClassifier):
    """The model's LightGBM with its categorical columns fixed, for fairlearn's reductions,
    which call fit(X, y, sample_weight=...) on clones. `on_fit` (a class attribute: clones
    keep only constructor parameters) hears of every fit, for the progress line."""

    on_fit: Callable[[], None] | None = None
    # The encoded matrix's categorical columns, set per comparison (clones keep no state).
    categorical: ClassVar[list[int]] = []

    def fit(self, X: Any, y: Any, sample_weight: Any = None, **kwargs: Any) -> CategoricalLGBM:  # noqa: N803
        fitted = super().fit(
            X, y, sample_weight=sample_weight, categorical_feature=CategoricalLGBM.categorical
        )
        if CategoricalLGBM.on_fit is not None:
            CategoricalLGBM.on_fit()
        return fitted


class FitProgress:
    """A line per fit of a long step, with the time left at the pace so far, against the number
    of fits it is expected to take (an estimate: the reductions fit a varying number per round,
    and stop early once they converge)."""

    def __init__(self, label: str, expected: int, log: Callable[[str], None]) -> None:
        self.label, self.expected, self.log = label, expected, log
        self.started, self.done = time.perf_counter(), 0

    def __call__(self) -> None:
        self.done += 1
        spent = time.perf_counter() - self.started
        left = spent / self.done * max(self.expected - self.done, 0)
        self.log(
            f"  {self.label}: fit {self.done} (about {self.expected} expected), "
            f"{spent:.0f} s so far, ~{left:.0f} s left"
        )


class _Scores(ClassifierMixin, BaseEstimator):
    """A 'fitted estimator' whose probability is the score it is handed: ThresholdOptimizer
    then picks thresholds on scores computed elsewhere (out-of-fold, not in-sample)."""

    def fit(self, X: Any, y: Any) -> _Scores:  # noqa: N803
        self.classes_ = np.array([0, 1])
        return self

    def predict_proba(self, X: Any) -> np.ndarray:  # noqa: N803
        score = np.asarray(X, dtype=np.float64)[:, 0]
        return np.column_stack([1 - score, score])


def _timed(fit: Any) -> tuple[Any, float]:
    started = time.perf_counter()
    result = fit()
    return result, time.perf_counter() - started


def exponentiated_gradient(
    encoded: Any,
    y_train: pd.Series,
    groups: pd.Series,
    params: dict,
    seed: int,
    log: Callable[[str], None] = print,
) -> Outcome:
    from fairlearn.reductions import EqualizedOdds, ExponentiatedGradient

    base = make_model(params, seed=seed)
    estimator = CategoricalLGBM(**base.get_params())
    reduction = ExponentiatedGradient(
        estimator, constraints=EqualizedOdds(), max_iter=EG_ITERATIONS
    )
    # It ran 210 s without a word before. A round fits one model, and up to 8 more to bound
    # the duality gap; on this data about 1.6 a round (32 fits for 20 rounds, measured).
    expected = round(EG_FITS_PER_ROUND * EG_ITERATIONS)
    CategoricalLGBM.on_fit = FitProgress("exponentiated gradient", expected, log)
    try:
        _, seconds = _timed(
            lambda: reduction.fit(
                encoded.train_matrix, y_train.to_numpy(), sensitive_features=groups
            )
        )
    finally:
        CategoricalLGBM.on_fit = None
    return Outcome(
        scores=reduction._pmf_predict(encoded.val_matrix)[:, 1],  # the mixture's P(positive)
        decisions=np.asarray(reduction.predict(encoded.val_matrix, random_state=seed)),
        seconds=seconds,
    )


def threshold_optimizer(
    encoded: Any,
    y_train: pd.Series,
    groups: tuple[pd.Series, pd.Series],
    plain: Outcome,
    params: dict,
    seed: int,
) -> Outcome:
    """Per-group thresholds (the constrained attribute's groups, training and validation rows)
    chosen on out-of-fold training scores, applied to the plain model's validation scores. Its
    decisions read the sensitive attribute: opt-in, evaluation only."""
    from fairlearn.postprocessing import ThresholdOptimizer
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    def fit() -> ThresholdOptimizer:
        folds = StratifiedKFold(n_splits=CV_FOLDS, shuffle=True, random_state=seed)
        oof = cross_val_predict(
            CategoricalLGBM(**make_model(params, seed=seed).get_params()),
            encoded.train_matrix,
            y_train.to_numpy(),
            cv=folds,
            method="predict_proba",
        )[:, 1]
        optimizer = ThresholdOptimizer(
            estimator=_Scores().fit(None, None),
            constraints="true_positive_rate_parity",
            objective="accuracy_score",
            prefit=True,
            predict_method="predict_proba",
        )
        return optimizer.fit(oof.reshape(-1, 1), y_train.to_numpy(), sensitive_features=groups[0])

    optimizer, seconds = _timed(fit)
    decisions = optimizer.predict(
        plain.scores.reshape(-1, 1), sensitive_features=groups[1], random_state=seed
    )
    return Outcome(scores=plain.scores, decisions=np.asarray(decisions), seconds=seconds)


def candidate_outcomes(
    spec: DatasetSpec,
    names: Sequence[str],
    split: Split,
    params: dict[str, Any],
    seed: int,
    log: Any = print,
) -> dict[str, Outcome]:
    """Fit every named candidate on the training part; score it on the validation part."""
    x_train, x_val, y_train, _ = split
    encoded = encode(spec, x_train, x_val)
    CategoricalLGBM.categorical = categorical_indices(spec)
    proxies = check_proxies(encoded, x_train, seed)
    groups_train, groups_val = groups_frame(spec, x_train), groups_frame(spec, x_val)
    constrained = (groups_train.iloc[:, 0], groups_val.iloc[:, 0])
    outcomes: dict[str, Outcome] = {}
    for name in ["none", *[n for n in names if n != "none"]]:
        log(f"candidate {name} ...")
        if name in TRAINABLE:
            choice = fit_choice(name, proxies, groups_train, y_train.to_numpy())
            fitted, seconds = _timed(lambda c=choice: fit_model(encoded, y_train, params, seed, c))
            outcome = Outcome(fitted.proba, fitted.proba >= DECISION_THRESHOLD, seconds)
        elif name == "exponentiated_gradient":
            outcome = exponentiated_gradient(encoded, y_train, constrained[0], params, seed, log)
        else:
            plain = outcomes["none"]
            outcome = threshold_optimizer(encoded, y_train, constrained, plain, params, seed)
        outcomes[name] = outcome
        log(f"candidate {name}: fit in {outcome.seconds:.1f}s")
    return outcomes


def compare(
    artifacts: Path, data: Path | None, names: Sequence[str], log: Any = print
) -> dict[str, Any]:
    """The whole comparison for one trained set, as mitigation.json holds it."""
    metrics = json.loads((artifacts / METRICS_FILE).read_text())
    spec = load_bundle(artifacts).spec
    if not spec.fairness_attributes:
        raise DataError(f"{artifacts}: the dataset spec names no sensitive column to compare on")
    data = data or Path(metrics["data"]["path"])
    if not data.is_file():
        raise DataError(f"{data}: not found (the data {artifacts} was trained on; pass --data)")
    if sha256_file(data) != metrics["data"]["sha256"]:
        raise DataError(f"{data}: not the file {artifacts} was trained on (its sha256 differs)")
    seed = metrics["seed"]
    # The set's own rows: the holdout left out as training left it out, then the same split.
    carved = carve_holdout(spec, load_dataset(data, spec)).dataset
    split = split_dataset(carved, val_size=metrics["val_size"], seed=seed)
    outcomes = candidate_outcomes(spec, names, split, metrics["hyperparameters"], seed, log)
    x_val, y_val = split[1], split[3].to_numpy()
    groups = groups_frame(spec, x_val)
    rows = comparison_table(y_val, outcomes, groups, seed=seed)
    plain_seconds = max(outcomes["none"].seconds, 1e-9)
    for row in rows:
        row["slowdown"] = round(row["train_seconds"] / plain_seconds, 1)
        row["too_slow"] = row["slowdown"] > SLOW_FACTOR
    attribute = groups.columns[0]
    return {
        "artifacts": str(artifacts),
        "dataset": spec.name,
        "data": {"path": str(data), "sha256": metrics["data"]["sha256"]},
        "seed": seed,
        "train_rows": len(split[0]),
        "val_rows": len(y_val),
        "hyperparameters": "the plain model's search result; candidates are not re-tuned",
        "decision_threshold": DECISION_THRESHOLD,
        "attribute": attribute,
        "rows": rows,
        "recommendation": recommend(rows, attribute),
    }
