"""Preprocessing pipelines, built from the spec: the model's (fit on model inputs only) and the
baseline's."""

from __future__ import annotations

import numpy as np
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

from src.dataset.spec import DatasetSpec


def _categorical_imputer(spec: DatasetSpec) -> SimpleImputer:
    return SimpleImputer(strategy="constant", fill_value=spec.missing_category)


def build_feature_pipeline(spec: DatasetSpec) -> ColumnTransformer:
    """Median-impute numerics, ordinal-encode categoricals for LightGBM's native categorical splits.

    Only the spec's model inputs are named, and `remainder="drop"`, so sensitive columns cannot
    leak in. Categories never seen in training become NaN, which LightGBM routes as missing.
    """
    categorical = Pipeline(
        [
            ("impute", _categorical_imputer(spec)),
            (
                "encode",
                OrdinalEncoder(
                    handle_unknown="use_encoded_value", unknown_value=np.nan, dtype=np.float64
                ),
            ),
        ]
    )
    return ColumnTransformer(
        [
            ("num", SimpleImputer(strategy="median"), list(spec.numeric_inputs)),
            ("cat", categorical, list(spec.categorical_inputs)),
        ],
        remainder="drop",
        verbose_feature_names_out=False,
    )


def categorical_indices(spec: DatasetSpec) -> list[int]:
    """Positions of the categorical columns in the feature pipeline's output."""
    start = len(spec.numeric_inputs)
    return list(range(start, start + len(spec.categorical_inputs)))


def build_baseline_pipeline(spec: DatasetSpec) -> ColumnTransformer:
    """Preprocessing for the logistic-regression baseline: scaled numerics, one-hot categoricals."""
    numeric = Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())])
    categorical = Pipeline(
        [("impute", _categorical_imputer(spec)), ("encode", OneHotEncoder(handle_unknown="ignore"))]
    )
    return ColumnTransformer(
        [
            ("num", numeric, list(spec.numeric_inputs)),
            ("cat", categorical, list(spec.categorical_inputs)),
        ],
        remainder="drop",
    )
