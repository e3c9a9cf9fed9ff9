"""The model and its hyperparameter search: randomized, scored by stratified CV inside the
training part only. Threads and processes come from src/training/threads.py."""

from __future__ import annotations

import time
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
from scipy.stats import loguniform, randint, uniform
from sklearn.model_selection import ParameterSampler, StratifiedKFold, cross_val_score
from sklearn.pipeline import Pipeline

from src.dataset.spec import DatasetSpec
from src.training.data import log
from src.training.features import build_feature_pipeline, categorical_indices
from src.training.threads import fit_threads, fold_processes

CV_FOLDS = 5
# A search on more training rows than this runs on a stratified sample of them (seeded): it ranks
# 20 settings, and the final fit uses every row. The census file (7,632 training rows) is searched
# whole; a 100,000-row, 50-column table trains in under 2 minutes on two cores this way
# (bench/results/dataset.md), where each of its 100 cross-validation fits would otherwise take
# four times as long.
SEARCH_ROWS = 15_000
DEFAULT_PARAMS: dict[str, Any] = {
    "n_estimators": 300,
    "learning_rate": 0.05,
    "num_leaves": 31,
    "min_child_samples": 20,
    "subsample": 1.0,
    "colsample_bytree": 1.0,
    "reg_lambda": 0.0,
}
SEARCH_SPACE: dict[str, Any] = {
    "n_estimators": randint(100, 500),
    "learning_rate": loguniform(0.02, 0.2),
    "num_leaves": randint(8, 48),
    "min_child_samples": randint(10, 100),
    "subsample": uniform(0.6, 0.4),
    "colsample_bytree": uniform(0.6, 0.4),
    "reg_lambda": loguniform(1e-3, 10.0),
}


def make_model(params: dict[str, Any], *, seed: int, threads: int = 1) -> lgb.LGBMClassifier:
    """The model; `threads` from src/training/threads.py (results do not depend on it)."""
    return lgb.LGBMClassifier(
        **params,
        subsample_freq=1,
        random_state=seed,
        n_jobs=threads,
        deterministic=True,
        force_row_wise=True,
        verbose=-1,
    )


def search_sample(
    x_train: pd.DataFrame, y_train: pd.Series, *, seed: int, limit: int = SEARCH_ROWS
) -> tuple[pd.DataFrame, pd.Series]:
    """The rows the search scores on: all of them up to `limit`, else a stratified sample."""
    if len(x_train) <= limit:
        return x_train, y_train
    from sklearn.model_selection import train_test_split

    sample, _, y_sample, _ = train_test_split(
        x_train, y_train, train_size=limit, random_state=seed, stratify=y_train
    )
    log(f"hpo: on a stratified sample of {limit:,} of the {len(x_train):,} training rows")
    return sample, y_sample


def search_hyperparameters(
    spec: DatasetSpec, x_train: pd.DataFrame, y_train: pd.Series, *, trials: int, seed: int
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Randomized search scored by stratified CV inside the training part only."""
    if trials <= 0:
        return dict(DEFAULT_PARAMS), []
    x_train, y_train = search_sample(x_train, y_train, seed=seed)
    folds = StratifiedKFold(n_splits=CV_FOLDS, shuffle=True, random_state=seed)
    sampler = ParameterSampler(SEARCH_SPACE, n_iter=trials, random_state=seed)
    # Parallel where it pays: the folds in processes, each fit on its own thread.
    processes = fold_processes(CV_FOLDS)
    threads = fit_threads(len(x_train) * (CV_FOLDS - 1) // CV_FOLDS)
    history: list[dict[str, Any]] = []
    search_started = time.perf_counter()
    best: dict[str, Any] = {}
    best_score = -np.inf
    for i, params in enumerate(sampler, start=1):
        params = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in params.items()}
        pipeline = Pipeline(
            [
                ("features", build_feature_pipeline(spec)),
                ("model", make_model(params, seed=seed, threads=threads)),
            ]
        )
        started = time.perf_counter()
        scores = cross_val_score(
            pipeline,
            x_train,
            y_train,
            cv=folds,
            scoring="roc_auc",
            params={"model__categorical_feature": categorical_indices(spec)},
            n_jobs=processes,
        )
        score = float(scores.mean())
        history.append(
            {"trial": i, "params": params, "cv_roc_auc": score, "cv_std": float(scores.std())}
        )
        if score > best_score:
            best, best_score = params, score
        spent = time.perf_counter() - search_started
        log(
            f"  trial {i:>2}/{trials}  cv roc_auc {score:.4f} ± {scores.std():.4f}  "
            f"best {best_score:.4f}  ({time.perf_counter() - started:.1f}s; "
            f"~{spent / i * (trials - i):.0f}s left)"
        )
    return best, history
