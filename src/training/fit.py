"""The final fit: the preprocessing pipeline on the training part, the model, the proxy check
and the logistic baseline."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from src.dataset.groups import groups_frame
from src.dataset.spec import DatasetSpec
from src.training.evaluate import proxy_check
from src.training.features import (
    build_baseline_pipeline,
    build_feature_pipeline,
    categorical_indices,
)
from src.training.mitigation import PLAIN, FitChoice
from src.training.search import make_model
from src.training.threads import fit_threads


@dataclass(frozen=True)
class Encoded:
    """The preprocessing pipeline fit on the training part, and both parts through it."""

    spec: DatasetSpec
    pipeline: Any
    names: list[str]
    train_matrix: np.ndarray
    val_matrix: np.ndarray


@dataclass(frozen=True)
class FittedModel:
    """The final fit: the preprocessing pipeline, the model and what validation saw."""

    pipeline: Any
    model: lgb.LGBMClassifier
    names: list[str]
    train_matrix: np.ndarray
    val_matrix: np.ndarray
    proba: np.ndarray
    mitigation: FitChoice


def encode(spec: DatasetSpec, x_train: pd.DataFrame, x_val: pd.DataFrame) -> Encoded:
    pipeline = build_feature_pipeline(spec).fit(x_train[list(spec.model_inputs)])
    return Encoded(
        spec=spec,
        pipeline=pipeline,
        names=list(pipeline.get_feature_names_out()),
        train_matrix=pipeline.transform(x_train),
        val_matrix=pipeline.transform(x_val),
    )


def fit_model(
    encoded: Encoded,
    y_train: pd.Series,
    params: dict[str, Any],
    seed: int,
    mitigation: FitChoice = PLAIN,
) -> FittedModel:
    threads = fit_threads(len(encoded.train_matrix))
    model = make_model(params, seed=seed, threads=threads).fit(
        mitigation.training_matrix(encoded.train_matrix, encoded.names),
        y_train,
        sample_weight=mitigation.sample_weight,
        categorical_feature=categorical_indices(encoded.spec),
    )
    return FittedModel(
        pipeline=encoded.pipeline,
        model=model,
        names=encoded.names,
        train_matrix=encoded.train_matrix,
        val_matrix=encoded.val_matrix,
        proba=model.predict_proba(encoded.val_matrix)[:, 1],
        mitigation=mitigation,
    )


def check_proxies(encoded: Encoded, x_train: pd.DataFrame, seed: int) -> dict[str, Any]:
    """How well the encoded inputs predict each sensitive attribute (evaluate.proxy_check)."""
    spec = encoded.spec
    return proxy_check(
        encoded.train_matrix,
        encoded.names,
        groups_frame(spec, x_train, spec.sensitive),
        categorical=categorical_indices(spec),
        seed=seed,
        threads=fit_threads(len(encoded.train_matrix)),
    )


def fit_baseline(
    spec: DatasetSpec, x_train: pd.DataFrame, y_train: pd.Series, x_val: pd.DataFrame
) -> np.ndarray:
    """The logistic-regression yardstick's validation probabilities."""
    inputs = list(spec.model_inputs)
    baseline = Pipeline(
        [
            ("features", build_baseline_pipeline(spec)),
            ("model", LogisticRegression(max_iter=2000, C=1.0)),
        ]
    ).fit(x_train[inputs], y_train)
    return baseline.predict_proba(x_val[inputs])[:, 1]
