"""Preprocessing pipelines: the model's (fit on model inputs only) and the baseline's."""

from __future__ import annotations

import numpy as np
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

from src.schema import CATEGORICAL_INPUTS, MISSING_CATEGORY, NUMERIC_INPUTS


def _categorical_imputer() -> SimpleImputer:
    return SimpleImputer(strategy="constant", fill_value=MISSING_CATEGORY)


def build_feature_pipeline() -> ColumnTransformer:
    """Median-impute numerics, ordinal-encode categoricals for LightGBM's native categorical splits.

    Only MODEL_INPUTS are named, and `remainder="drop"`, so sensitive columns cannot leak in.
    Categories never seen in training become NaN, which LightGBM routes as missing.
    """
    categorical = Pipeline(
        [
            ("impute", _categorical_imputer()),
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
            ("num", SimpleImputer(strategy="median"), list(NUMERIC_INPUTS)),
            ("cat", categorical, list(CATEGORICAL_INPUTS)),
        ],
        remainder="drop",
        verbose_feature_names_out=False,
    )


def categorical_indices() -> list[int]:
    """Positions of the categorical columns in the feature pipeline's output."""
    start = len(NUMERIC_INPUTS)
    return list(range(start, start + len(CATEGORICAL_INPUTS)))


def build_baseline_pipeline() -> ColumnTransformer:
    """Preprocessing for the logistic-regression baseline: scaled numerics, one-hot categoricals."""
    numeric = Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())])
    categorical = Pipeline(
        [("impute", _categorical_imputer()), ("encode", OneHotEncoder(handle_unknown="ignore"))]
    )
    return ColumnTransformer(
        [
            ("num", numeric, list(NUMERIC_INPUTS)),
            ("cat", categorical, list(CATEGORICAL_INPUTS)),
        ],
        remainder="drop",
    )
