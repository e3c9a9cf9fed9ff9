"""Every fairness mitigation on the trained model's own split, seed and hyperparameters: one table
(ROC-AUC, accuracy, DP and EO gaps for sex and race, bootstrap 95% intervals) and a choice.

    python -m src.mitigation_table --artifacts artifacts/

reads the set's metrics.json (data, seed, split, hyperparameters), checks the data is the file the
set was trained on, and writes mitigation.json and mitigation.md beside it; `python -m src.report`
draws the table and the accuracy-against-gap plot into the model report.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from src import cli
from src.choices import CANDIDATES, DEFAULT_CANDIDATES, OPT_IN


def build_parser() -> argparse.ArgumentParser:
    parser = cli.parser("python -m src.mitigation_table", __doc__.split("\n\n", 1)[0])
    parser.add_argument(
        "--artifacts", type=Path, default=Path("artifacts"), help="the trained set to compare on"
    )
    parser.add_argument("--data", type=Path, help="default: the path in the set's metrics.json")
    parser.add_argument(
        "--candidates",
        nargs="+",
        choices=CANDIDATES,
        default=list(DEFAULT_CANDIDATES),
        help=f"which to compare ({', '.join(OPT_IN)} only when named: it decides with sex)",
    )
    return parser


if __name__ == "__main__":  # parse first, import after: --help and a missing file answer at once
    cli.parse_first(build_parser, inputs=("artifacts", "data"))
    from src.threads import configure_openmp

    configure_openmp()  # before LightGBM loads, just below

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin

from src.artifacts import METRICS_FILE
from src.data import load_dataset, split_dataset
from src.errors import DataError
from src.evaluate import HEADLINE_INTERVAL, HEADLINE_RULE, group_labels
from src.fileio import dumps_json, run_cli, sha256_file, write_text_atomic
from src.mitigation import (
    CONSTRAINED_ATTRIBUTE,
    TRAINABLE,
    Outcome,
    comparison_table,
    fit_choice,
    recommend,
)
from src.pages import MITIGATION_HTML
from src.report import MITIGATION_JSON, mitigation_section
from src.schema import SENSITIVE
from src.training import (
    CV_FOLDS,
    DECISION_THRESHOLD,
    carve_holdout,
    check_proxies,
    encode,
    fit_model,
    make_model,
)

MITIGATION_MD = "mitigation.md"
EG_ITERATIONS = 20  # fairlearn's default is 50; each iteration fits one LightGBM model or more
EG_FITS_PER_ROUND = 1.6  # measured on this data: the progress line's estimate
SLOW_FACTOR = 10  # a candidate this many times slower than the plain fit is flagged


class CategoricalLGBM(lgb.LGBMClassifier):
    """The model's LightGBM with its categorical columns fixed, for fairlearn's reductions,
    which call fit(X, y, sample_weight=...) on clones. `on_fit` (a class attribute: clones
    keep only constructor parameters) hears of every fit, for the progress line."""

    on_fit: Callable[[], None] | None = None

    def fit(self, X: Any, y: Any, sample_weight: Any = None, **kwargs: Any) -> CategoricalLGBM:  # noqa: N803
        from src.features import categorical_indices

        fitted = super().fit(
            X, y, sample_weight=sample_weight, categorical_feature=categorical_indices()
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
    sex: pd.Series,
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
            lambda: reduction.fit(encoded.train_matrix, y_train.to_numpy(), sensitive_features=sex)
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
    split: tuple[pd.DataFrame, pd.DataFrame, pd.Series, pd.Series],
    plain: Outcome,
    params: dict,
    seed: int,
) -> Outcome:
    """Per-sex thresholds chosen on out-of-fold training scores, applied to the plain model's
    validation scores. Its decisions read sex: opt-in, evaluation only."""
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
        sex = group_labels(split[0][CONSTRAINED_ATTRIBUTE])
        return optimizer.fit(oof.reshape(-1, 1), y_train.to_numpy(), sensitive_features=sex)

    optimizer, seconds = _timed(fit)
    sex_val = group_labels(split[1][CONSTRAINED_ATTRIBUTE])
    decisions = optimizer.predict(
        plain.scores.reshape(-1, 1), sensitive_features=sex_val, random_state=seed
    )
    return Outcome(scores=plain.scores, decisions=np.asarray(decisions), seconds=seconds)


def candidate_outcomes(
    names: Sequence[str],
    split: tuple[pd.DataFrame, pd.DataFrame, pd.Series, pd.Series],
    params: dict[str, Any],
    seed: int,
    log: Any = print,
) -> dict[str, Outcome]:
    """Fit every named candidate on the training part; score it on the validation part."""
    x_train, x_val, y_train, _ = split
    encoded = encode(x_train, x_val)
    proxies = check_proxies(encoded, x_train, seed)
    outcomes: dict[str, Outcome] = {}
    for name in ["none", *[n for n in names if n != "none"]]:
        log(f"candidate {name} ...")
        if name in TRAINABLE:
            choice = fit_choice(name, proxies, x_train[list(SENSITIVE)], y_train.to_numpy())
            fitted, seconds = _timed(lambda c=choice: fit_model(encoded, y_train, params, seed, c))
            outcome = Outcome(fitted.proba, fitted.proba >= DECISION_THRESHOLD, seconds)
        elif name == "exponentiated_gradient":
            sex = group_labels(x_train[CONSTRAINED_ATTRIBUTE])
            outcome = exponentiated_gradient(encoded, y_train, sex, params, seed, log)
        else:
            outcome = threshold_optimizer(encoded, y_train, split, outcomes["none"], params, seed)
        outcomes[name] = outcome
        log(f"candidate {name}: fit in {outcome.seconds:.1f}s")
    return outcomes


def compare(
    artifacts: Path, data: Path | None, names: Sequence[str], log: Any = print
) -> dict[str, Any]:
    """The whole comparison for one trained set, as mitigation.json holds it."""
    metrics = json.loads((artifacts / METRICS_FILE).read_text())
    data = data or Path(metrics["data"]["path"])
    if not data.is_file():
        raise DataError(f"{data}: not found (the data {artifacts} was trained on; pass --data)")
    if sha256_file(data) != metrics["data"]["sha256"]:
        raise DataError(f"{data}: not the file {artifacts} was trained on (its sha256 differs)")
    seed = metrics["seed"]
    # The set's own rows: the holdout left out as training left it out, then the same split.
    carved = carve_holdout(load_dataset(data)).dataset
    split = split_dataset(carved, val_size=metrics["val_size"], seed=seed)
    outcomes = candidate_outcomes(names, split, metrics["hyperparameters"], seed, log)
    x_val, y_val = split[1], split[3].to_numpy()
    rows = comparison_table(y_val, outcomes, x_val[list(SENSITIVE)], seed=seed)
    plain_seconds = max(outcomes["none"].seconds, 1e-9)
    for row in rows:
        row["slowdown"] = round(row["train_seconds"] / plain_seconds, 1)
        row["too_slow"] = row["slowdown"] > SLOW_FACTOR
    return {
        "artifacts": str(artifacts),
        "data": {"path": str(data), "sha256": metrics["data"]["sha256"]},
        "seed": seed,
        "train_rows": len(split[0]),
        "val_rows": len(y_val),
        "hyperparameters": "the plain model's search result; candidates are not re-tuned",
        "decision_threshold": DECISION_THRESHOLD,
        "rows": rows,
        "recommendation": recommend(rows),
    }


def _cell(values: dict[str, Any], key: str) -> str:
    low, high = values["ci95"][key]
    return f"{values['metrics'][key]:.3f} [{low:.3f}, {high:.3f}]"


def table_markdown(result: dict[str, Any]) -> str:
    keys = ("roc_auc", "accuracy", "sex_dp", "sex_eo", "race_dp", "race_eo")
    lines = [
        "# Fairness mitigations, measured",
        "",
        f"{result['val_rows']} validation rows, seed {result['seed']}, threshold "
        f"{result['decision_threshold']}; 95% intervals in brackets (ROC-AUC, accuracy: "
        f"percentile bootstrap; gaps: {HEADLINE_INTERVAL}). Each gap (dp: selection rate, eo: "
        f"true-positive rate) is {HEADLINE_RULE}.",
        "",
        "| candidate | " + " | ".join(keys) + " | fit s | x plain |",
        "|---|" + "---:|" * (len(keys) + 2),
    ]
    for row in result["rows"]:
        slow = " (over 10x)" if row["too_slow"] else ""
        name = row["candidate"] + ("" if row["trainable"] else " (evaluation only)")
        cells = " | ".join(_cell(row, k) for k in keys)
        lines.append(
            f"| {name} | {cells} | {row['train_seconds']:.2f} | {row['slowdown']:.1f}{slow} |"
        )
    choice = result["recommendation"]
    lines += ["", f"**Choice: {choice['candidate']}.** {choice['why']}", ""]
    return "\n".join(lines)


def attach_to_registered(artifacts: Path, outputs: dict[str, str]) -> Path | None:
    """The table beside the set's copy in the registry (when it is registered there), so the
    served card shows it too; recorded in the registry's history with each file's hash."""
    from src.artifacts import model_version, read_manifest
    from src.registry.core import opened_registry
    from src.settings import Settings

    version = model_version(read_manifest(artifacts))
    try:
        with opened_registry(Settings()) as registry:
            registry.get(version)
            folder = registry.folder(version)
            for name, text in outputs.items():
                write_text_atomic(folder / name, text)
            digests = {n: hashlib.sha256(t.encode()).hexdigest() for n, t in outputs.items()}
            registry.note(
                "attached",
                version,
                actor="python -m src.mitigation_table",
                reason="the fairness mitigations, measured",
                details=digests,
            )
            return folder
    except DataError:  # not registered here: the artifacts folder holds the table
        return None


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        if not (args.artifacts / METRICS_FILE).is_file():
            raise DataError(f"{args.artifacts}: no {METRICS_FILE} (train first: make train)")
        result = compare(
            args.artifacts,
            args.data,
            args.candidates,
            log=lambda m: print(m, file=sys.stderr, flush=True),
        )
        outputs = {
            MITIGATION_JSON: dumps_json(result),
            MITIGATION_MD: table_markdown(result),
            MITIGATION_HTML: mitigation_section(result),  # the card's section, rendered once
        }
        for name, text in outputs.items():
            write_text_atomic(args.artifacts / name, text)
        print(outputs[MITIGATION_MD])
        if where := attach_to_registered(args.artifacts, outputs):
            print(f"also beside the registered set in {where}: /report shows the table")
        return 0

    return run_cli(body)


if __name__ == "__main__":
    raise SystemExit(main())
