"""The one declaration of the dataset's columns; every other module reads it from here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["numeric", "categorical"]


@dataclass(frozen=True, slots=True)
class Column:
    """One column of a census record.

    `sensitive` columns are kept for fairness and drift monitoring but never reach the model.
    `minimum`/`maximum` are the bounds the API enforces on numeric inputs.
    """

    name: str
    kind: Kind
    description: str
    sensitive: bool = False
    minimum: float | None = None
    maximum: float | None = None


COLUMNS: tuple[Column, ...] = (
    Column("age", "numeric", "Age in years.", minimum=0, maximum=120),
    Column("workclass", "categorical", "Employer type, e.g. Private, State-gov."),
    Column("education", "categorical", "Highest education level, e.g. Bachelors."),
    Column(
        "education_num",
        "numeric",
        "Education level as an ordinal number (1 = Preschool .. 16 = Doctorate).",
        minimum=1,
        maximum=16,
    ),
    Column("marital_status", "categorical", "Marital status.", sensitive=True),
    Column("occupation", "categorical", "Occupation group, e.g. Tech-support."),
    Column("relationship", "categorical", "Role in the household, e.g. Husband, Own-child."),
    Column("race", "categorical", "Race as recorded by the census.", sensitive=True),
    Column("sex", "categorical", "Sex as recorded by the census.", sensitive=True),
    # UCI caps both capital amounts at 99,999; the bound leaves room without admitting nonsense.
    Column("capital_gain", "numeric", "Capital gains in USD.", minimum=0, maximum=1_000_000),
    Column("capital_loss", "numeric", "Capital losses in USD.", minimum=0, maximum=1_000_000),
    Column("hours_per_week", "numeric", "Hours worked per week.", minimum=0, maximum=168),
    Column("native_country", "categorical", "Country of origin.", sensitive=True),
)

TARGET = "income_gt_50k"
# Raw UCI files label the target as text: "<=50K" / ">50K" (adult.test adds a trailing ".").
RAW_TARGET = "income"
POSITIVE_LABEL = ">50K"
NEGATIVE_LABEL = "<=50K"

# Column order of the headerless UCI files (fnlwgt is a sampling weight, not a feature).
UCI_COLUMNS: tuple[str, ...] = (
    "age",
    "workclass",
    "fnlwgt",
    "education",
    "education_num",
    "marital_status",
    "occupation",
    "relationship",
    "race",
    "sex",
    "capital_gain",
    "capital_loss",
    "hours_per_week",
    "native_country",
    RAW_TARGET,
)

# A missing category is a category of its own: in the census an unknown occupation mostly means
# "not working", which carries signal a most-frequent fill would erase. Training fills it in and
# serving maps null to it, so both read it from here.
MISSING_CATEGORY = "missing"

COLUMN_BY_NAME: dict[str, Column] = {c.name: c for c in COLUMNS}
FEATURES: tuple[str, ...] = tuple(c.name for c in COLUMNS)
SENSITIVE: tuple[str, ...] = tuple(c.name for c in COLUMNS if c.sensitive)
MODEL_INPUTS: tuple[str, ...] = tuple(c.name for c in COLUMNS if not c.sensitive)
NUMERIC_INPUTS: tuple[str, ...] = tuple(
    c.name for c in COLUMNS if not c.sensitive and c.kind == "numeric"
)
CATEGORICAL_INPUTS: tuple[str, ...] = tuple(
    c.name for c in COLUMNS if not c.sensitive and c.kind == "categorical"
)
NUMERIC: tuple[str, ...] = tuple(c.name for c in COLUMNS if c.kind == "numeric")
# The published CSV layout: every feature in declaration order, then the target.
CSV_COLUMNS: tuple[str, ...] = (*FEATURES, TARGET)
