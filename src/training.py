"""Reproducible training: the holdout left out, split, randomized HPO by CV, final fit,
evaluation, artifacts. The CLI is src/train.py; threads and processes come from src/threads.py."""

from __future__ import annotations

import pickle
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
from scipy.stats import loguniform, randint, uniform
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import ParameterSampler, StratifiedKFold, cross_val_score
from sklearn.pipeline import Pipeline

from src.artifacts import (
    CARD_FILE,
    DRIFT_REFERENCE_FILE,
    HOLDOUT_ROWS_FILE,
    IMPORTANCES_FILE,
    METRICS_FILE,
    MODEL_FILE,
    PIPELINE_FILE,
    PREDICTIONS_FILE,
    REFERENCE_FILE,
    SAMPLE_FILE,
    VALIDATION_ROWS_FILE,
    git_sha,
    library_versions,
    write_artifact_set,
)
from src.choices import MIN_ROC_AUC
from src.data import Dataset, load_dataset, split_dataset
from src.drift import fit_reference, references_to_json
from src.errors import DataError
from src.evaluate import (
    FAIRNESS_ATTRIBUTES,
    GAP_LIMIT,
    HEADLINE_INTERVAL,
    HEADLINE_RULE,
    classification_metrics,
    group_fairness,
    headline_gap_intervals,
    headline_gaps,
    mitigation_note,
    paired_auc_difference,
    proxy_check,
)
from src.features import build_baseline_pipeline, build_feature_pipeline, categorical_indices
from src.fileio import dumps_json, sha256_file
from src.holdout import describe as describe_holdout
from src.holdout import holdout_csv, in_holdout
from src.mitigation import PLAIN, FitChoice, fit_choice
from src.report import build_card
from src.schema import FEATURES, MODEL_INPUTS, SENSITIVE, TARGET
from src.threads import fit_threads, fold_processes

DECISION_THRESHOLD = 0.5
CV_FOLDS = 5
SAMPLE_ROWS = 32
HEADLINE_DRAWS = 1000  # bootstrap resamples of the validation rows for the headline gaps
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
    """The model; `threads` from src/threads.py (results do not depend on it)."""
    return lgb.LGBMClassifier(
        **params,
        subsample_freq=1,
        random_state=seed,
        n_jobs=threads,
        deterministic=True,
        force_row_wise=True,
        verbose=-1,
    )


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def search_hyperparameters(
    x_train: pd.DataFrame, y_train: pd.Series, *, trials: int, seed: int
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Randomized search scored by stratified CV inside the training part only."""
    if trials <= 0:
        return dict(DEFAULT_PARAMS), []
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
                ("features", build_feature_pipeline()),
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
            params={"model__categorical_feature": categorical_indices()},
            n_jobs=processes,
        )
        score = float(scores.mean())
        history.append(
            {"trial": i, "params": params, "cv_roc_auc": score, "cv_std": float(scores.std())}
        )
        if score > best_score:
            best, best_score = params, score
        spent = time.perf_counter() - search_started
        _log(
            f"  trial {i:>2}/{trials}  cv roc_auc {score:.4f} ± {scores.std():.4f}  "
            f"best {best_score:.4f}  ({time.perf_counter() - started:.1f}s; "
            f"~{spent / i * (trials - i):.0f}s left)"
        )
    return best, history


def feature_importances(
    model: lgb.LGBMClassifier, x_val: np.ndarray, names: list[str]
) -> pd.DataFrame:
    """LightGBM gain and mean |SHAP| (LightGBM's own pred_contrib) per model input, sorted."""
    booster = model.booster_
    contributions = booster.predict(x_val, pred_contrib=True)[:, :-1]  # last column: bias
    frame = pd.DataFrame(
        {
            "feature": names,
            "gain": booster.feature_importance(importance_type="gain"),
            "mean_abs_shap": np.abs(contributions).mean(axis=0),
        }
    )
    # Sorted by mean |SHAP|, like the report's chart: what moves a prediction, not split counts.
    return frame.sort_values(["mean_abs_shap", "feature"], ascending=[False, True]).reset_index(
        drop=True
    )


def sample_rows(x_val: pd.DataFrame, proba: np.ndarray) -> dict[str, Any]:
    """The first validation rows as a client would send them (JSON, null for missing), with the
    probabilities the trained pipeline gave them: the service's startup check and API example.
    A quarter are rows with missing values, so the check covers imputation too."""
    has_missing = np.flatnonzero(x_val.isna().any(axis=1).to_numpy())[: SAMPLE_ROWS // 4]
    complete = np.flatnonzero(x_val.notna().all(axis=1).to_numpy())
    positions = np.sort(np.concatenate([complete[: SAMPLE_ROWS - len(has_missing)], has_missing]))
    head = x_val.iloc[positions]
    rows = [
        {
            k: (None if pd.isna(v) else int(v) if isinstance(v, float) and v.is_integer() else v)
            for k, v in record.items()
        }
        for record in head.to_dict(orient="records")
    ]
    return {"rows": rows, "probabilities": proba[positions].tolist()}


def headline_markdown(fairness: dict[str, Any]) -> list[str]:
    """The headline gaps as a Markdown table, with their rule and interval."""
    lines = [
        "## The headline gaps",
        "",
        "| attribute | against | DP gap | 95% interval | EO gap | 95% interval |",
        "|---|---|---:|---|---:|---|",
    ]
    gaps, intervals = fairness["headline_gaps"], fairness["headline_gaps_ci95"]
    for attribute in FAIRNESS_ATTRIBUTES:
        cells = [
            f"{gaps[key]:.3f} | [{intervals[key][0]:.3f}, {intervals[key][1]:.3f}]"
            for key in (f"{attribute}_dp", f"{attribute}_eo")
        ]
        reference = fairness["by_attribute"][attribute]["reference_group"]
        lines.append(f"| {attribute} | {reference} | {' | '.join(cells)} |")
    rule = f"Each gap is {fairness['headline_rule']}. Interval: {fairness['headline_interval']}."
    return [*lines, "", rule, ""]


def fairness_markdown(metrics: dict[str, Any]) -> str:
    fairness = metrics["fairness"]
    lines = [
        "# Fairness report",
        "",
        f"Validation rows: {metrics['n_val']}. Decision threshold: {fairness['threshold']}. "
        f"Overall ROC-AUC: {fairness['overall_roc_auc']:.4f}.",
        "Sensitive attributes are never model inputs; they are used here only to measure.",
        f"Gaps are absolute differences against the largest group; gaps above {GAP_LIMIT:.2f} "
        "call for mitigation. Small groups (flagged) have rates too noisy to act on alone.",
        "",
        *headline_markdown(fairness),
    ]
    for attribute in FAIRNESS_ATTRIBUTES:
        report = fairness["by_attribute"][attribute]
        lines += [
            f"## {attribute} (reference group: {report['reference_group']})",
            "",
            "| group | n | positives | ROC-AUC | TPR | FPR | selection rate | DP diff | EO diff "
            "| small |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        for name, g in report["groups"].items():
            cells = [
                f"{v:.3f}" if isinstance(v, float) else "n/a"
                for v in (
                    g["roc_auc"],
                    g["tpr"],
                    g["fpr"],
                    g["selection_rate"],
                    g["demographic_parity_diff"],
                    g["equal_opportunity_diff"],
                )
            ]
            flag = "yes" if g["small_group"] else ""
            lines.append(f"| {name} | {g['n']} | {g['positives']} | {' | '.join(cells)} | {flag} |")
        lines.append("")
    lines += [
        "## Proxy check",
        "",
        "| attribute | predicted from inputs, ROC-AUC | strongest input |",
        "|---|---:|---|",
    ]
    for attribute, p in fairness["proxy_check"].items():
        auc = f"{p['roc_auc']:.3f}" if p["roc_auc"] is not None else "n/a"
        lines.append(
            f"| {attribute} (vs {p['majority_group']}) | {auc} | {p['strongest_input'] or 'n/a'} |"
        )
    lines += ["", "## Mitigation", ""]
    lines += [f"- {m}" for m in fairness["mitigations"]] or ["No gap exceeds 0.10."]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class TrainingData:
    """Rows to train on and where they came from: a file (`path`, `sha256`, `rows`), or for a
    retraining a file plus labelled traffic (with the traffic's time range)."""

    dataset: Dataset
    provenance: dict[str, Any]


def read_training_data(path: Path) -> TrainingData:
    dataset = load_dataset(path)
    for note in dataset.notes:
        _log(f"note: {path}: {note}")
    provenance = {"path": str(path), "sha256": sha256_file(path), "rows": len(dataset.features)}
    return TrainingData(dataset, provenance)


@dataclass(frozen=True)
class Carved:
    """The rows a run may use, and what it left out for the registry's holdout."""

    dataset: Dataset
    holdout: dict[str, Any]  # the rule, the rows excluded, their hash (the manifest records it)
    holdout_rows: bytes  # those rows as CSV: the registry adopts them from its first champion


def carve_holdout(dataset: Dataset) -> Carved:
    """Leave out the holdout's rows (src/holdout.py): no training path ever sees them."""
    if dataset.target is None:
        raise DataError("the dataset has no target column to train on")
    mask = in_holdout(dataset.features, dataset.target)
    if mask.all():
        raise DataError("every row falls in the holdout: too few rows to train on")
    kept = Dataset(
        features=dataset.features[~mask], target=dataset.target[~mask], notes=dataset.notes
    )
    rows = holdout_csv(dataset.features[mask], dataset.target[mask])
    return Carved(kept, describe_holdout(int(mask.sum()), int((~mask).sum()), rows), rows)


@dataclass(frozen=True)
class TrainResult:
    metrics: dict[str, Any]
    outdir: Path


@dataclass(frozen=True)
class Encoded:
    """The preprocessing pipeline fit on the training part, and both parts through it."""

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


def encode(x_train: pd.DataFrame, x_val: pd.DataFrame) -> Encoded:
    pipeline = build_feature_pipeline().fit(x_train[list(MODEL_INPUTS)])
    return Encoded(
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
        categorical_feature=categorical_indices(),
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
    return proxy_check(
        encoded.train_matrix,
        encoded.names,
        x_train[list(SENSITIVE)],
        categorical=categorical_indices(),
        seed=seed,
        threads=fit_threads(len(encoded.train_matrix)),
    )


def fit_baseline(x_train: pd.DataFrame, y_train: pd.Series, x_val: pd.DataFrame) -> np.ndarray:
    """The logistic-regression yardstick's validation probabilities."""
    baseline = Pipeline(
        [
            ("features", build_baseline_pipeline()),
            ("model", LogisticRegression(max_iter=2000, C=1.0)),
        ]
    ).fit(x_train[list(MODEL_INPUTS)], y_train)
    return baseline.predict_proba(x_val[list(MODEL_INPUTS)])[:, 1]


def fairness_block(
    fitted: FittedModel, proxies: dict[str, Any], x_val: pd.DataFrame, y_val: pd.Series, seed: int
) -> dict[str, Any]:
    """Per-group rates and gaps for sex and race, the proxy check, and what to try."""
    by_attribute = {
        a: group_fairness(y_val.to_numpy(), fitted.proba, sensitive_features=x_val[a], seed=seed)
        for a in FAIRNESS_ATTRIBUTES
    }
    mitigations = [
        note
        for a, report in by_attribute.items()
        if (note := mitigation_note(a, report, proxy=proxies[a]["strongest_input"]))
    ]
    y = y_val.to_numpy()
    picks = np.random.default_rng(seed).integers(0, len(y), size=(HEADLINE_DRAWS, len(y)))
    return {
        "threshold": DECISION_THRESHOLD,
        "by_attribute": by_attribute,
        "headline_gaps": headline_gaps(y, fitted.proba, x_val),
        "headline_gaps_ci95": headline_gap_intervals(
            y, fitted.proba >= DECISION_THRESHOLD, x_val, picks
        ),
        "headline_rule": HEADLINE_RULE,
        "headline_interval": HEADLINE_INTERVAL,
        "proxy_check": proxies,
        "mitigations": mitigations,
    }


def artifact_files(
    fitted: FittedModel,
    metrics: dict[str, Any],
    split: tuple[pd.DataFrame, pd.DataFrame, pd.Series, pd.Series],
    baseline_proba: np.ndarray,
    holdout_rows: bytes,
) -> dict[str, bytes]:
    x_train, x_val, _, y_val = split
    importances = feature_importances(fitted.model, fitted.val_matrix, fitted.names)
    predictions = pd.DataFrame(
        {
            "y_true": y_val.to_numpy(),
            "probability": fitted.proba,
            "baseline_probability": baseline_proba,
            **{a: x_val[a].astype(object).to_numpy() for a in FAIRNESS_ATTRIBUTES},
        }
    )
    return {
        PIPELINE_FILE: pickle.dumps(fitted.pipeline, protocol=5),
        MODEL_FILE: pickle.dumps(fitted.model, protocol=5),
        METRICS_FILE: dumps_json(metrics).encode(),
        IMPORTANCES_FILE: importances.to_csv(index=False, lineterminator="\n").encode(),
        CARD_FILE: build_card(metrics, predictions, importances).encode(),
        "fairness.md": fairness_markdown(metrics).encode(),
        SAMPLE_FILE: dumps_json(sample_rows(x_val, fitted.proba)).encode(),
        HOLDOUT_ROWS_FILE: holdout_rows,
        PREDICTIONS_FILE: predictions.to_csv(index=False, lineterminator="\n").encode(),
        REFERENCE_FILE: x_train[list(FEATURES)].to_csv(index=False, lineterminator="\n").encode(),
        DRIFT_REFERENCE_FILE: references_to_json(fit_reference(x_train[list(FEATURES)])).encode(),
        VALIDATION_ROWS_FILE: x_val[list(FEATURES)]
        .assign(**{TARGET: y_val.to_numpy()})
        .to_csv(index=False, lineterminator="\n")
        .encode(),
    }


def build_manifest(metrics: dict[str, Any], x_train: pd.DataFrame) -> dict[str, Any]:
    return {
        "created_at": metrics["timestamp"],
        "git_sha": metrics["git_sha"],
        "data_sha256": metrics["data"]["sha256"],
        "seed": metrics["seed"],
        "decision_threshold": DECISION_THRESHOLD,
        "model_inputs": metrics["model_inputs"],
        "sensitive": list(SENSITIVE),
        # Inputs that had missing values in training: the API accepts null for these only.
        "nullable": [c for c in MODEL_INPUTS if x_train[c].isna().any()],
        "mitigation": metrics["mitigation"],
        "versions": metrics["versions"],
        # The gate judges only a set that left the registry's holdout out (src/holdout.py), and
        # on traffic only from after the traffic it trained on (a retraining's).
        "holdout": metrics["data"]["holdout"],
        "training_traffic": metrics["data"].get("traffic"),
    }


def baseline_comparison(
    y_val: pd.Series, proba: np.ndarray, baseline_proba: np.ndarray, seed: int
) -> dict[str, Any]:
    """Does the tuned model beat the logistic baseline by more than the validation split's noise?"""
    paired = paired_auc_difference(y_val.to_numpy(), proba, baseline_proba, seed=seed)
    verdict = {
        "first better": "model better",
        "second better": "baseline better",
        "within noise": "no clear difference",
    }[paired["verdict"]]
    return {
        "roc_auc_difference": paired["difference"],
        "ci95": paired["ci95"],
        "verdict": verdict,
        "method": "model minus baseline ROC-AUC, paired bootstrap (1,000 draws) on validation",
    }


def assemble_metrics(
    fitted: FittedModel,
    baseline_proba: np.ndarray,
    fairness: dict[str, Any],
    split: tuple[pd.DataFrame, pd.DataFrame, pd.Series, pd.Series],
    *,
    params: dict[str, Any],
    trials_log: list[dict[str, Any]],
    run: dict[str, Any],
) -> dict[str, Any]:
    """metrics.json: validation metrics, the baseline, the search, fairness, acceptance.
    `run` holds what the caller chose: seed, val_size, trials and the data's provenance."""
    y_val = split[3]
    model_metrics = classification_metrics(y_val, fitted.proba, threshold=DECISION_THRESHOLD)
    metrics: dict[str, Any] = {
        **model_metrics,
        **split_summary(split),
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "git_sha": git_sha(),
        "seed": run["seed"],
        "val_size": run["val_size"],
        "decision_threshold": DECISION_THRESHOLD,
        "model": "lightgbm.LGBMClassifier",
        "hyperparameters": params,
        "hpo": {
            "trials": run["trials"],
            "cv_folds": CV_FOLDS,
            "scoring": "roc_auc",
            "history": trials_log,
        },
        "data": run["data"],
        "model_inputs": fitted.names,
        "sensitive_excluded": list(SENSITIVE),
        "mitigation": fitted.mitigation.describe(),
        "versions": library_versions(),
        "baseline": {
            "model": "LogisticRegression (one-hot, scaled)",
            **classification_metrics(y_val, baseline_proba, threshold=DECISION_THRESHOLD),
            "comparison": baseline_comparison(y_val, fitted.proba, baseline_proba, run["seed"]),
        },
        "acceptance": {
            "min_roc_auc": MIN_ROC_AUC,
            "passed": model_metrics["roc_auc"] >= MIN_ROC_AUC,
        },
        "fairness": {**fairness, "overall_roc_auc": model_metrics["roc_auc"]},
    }
    return metrics


def train(
    data: Path | TrainingData,
    outdir: Path,
    *,
    seed: int = 42,
    val_size: float = 0.2,
    trials: int = 20,
    mitigation: str = "none",
    params: dict[str, Any] | None = None,
) -> TrainResult:
    """Train, evaluate once on validation, and write the artifact set into `outdir`. `data` is a
    CSV file or rows already read (a retraining's). The holdout's rows are left out first.
    Given `params` (and no trials), those hyperparameters are used without a search."""
    started = time.perf_counter()
    if not isinstance(data, TrainingData):
        data = read_training_data(Path(data))
    carved = carve_holdout(data.dataset)
    _log(
        f"holdout: {carved.holdout['rows_excluded']} rows left out for the registry's gate "
        f"({carved.holdout['rule']})"
    )
    split = split_dataset(carved.dataset, val_size=val_size, seed=seed)
    x_train, x_val, y_train, y_val = split
    _log(
        f"data: {len(x_train)} train / {len(x_val)} validation rows, {y_train.mean():.1%} positive"
    )
    if params is not None and not trials:
        _log("hpo: skipped, hyperparameters given")
        params, trials_log = dict(params), []
    else:
        _log(
            f"hpo: {trials} trials x {CV_FOLDS}-fold CV on the training part"
            if trials
            else "hpo: skipped"
        )
        params, trials_log = search_hyperparameters(x_train, y_train, trials=trials, seed=seed)
    encoded = encode(x_train, x_val)
    _log("fairness: proxy check")
    proxies = check_proxies(encoded, x_train, seed)
    choice = fit_choice(mitigation, proxies, x_train[list(SENSITIVE)], y_train.to_numpy())
    if mitigation != "none":
        _log(f"mitigation: {choice.describe()}")
    fitted = fit_model(encoded, y_train, params, seed, choice)
    baseline_proba = fit_baseline(x_train, y_train, x_val)
    _log("fairness: groups and gaps")
    fairness = fairness_block(fitted, proxies, x_val, y_val, seed)
    provenance = {**data.provenance, "holdout": carved.holdout}
    run = {"seed": seed, "val_size": val_size, "trials": trials, "data": provenance}
    metrics = assemble_metrics(
        fitted, baseline_proba, fairness, split, params=params, trials_log=trials_log, run=run
    )
    metrics["train_seconds"] = round(time.perf_counter() - started, 2)
    files = artifact_files(fitted, metrics, split, baseline_proba, carved.holdout_rows)
    write_artifact_set(outdir, files, build_manifest(metrics, x_train))
    return TrainResult(metrics=metrics, outdir=outdir)


def split_summary(split: tuple[pd.DataFrame, pd.DataFrame, pd.Series, pd.Series]) -> dict[str, Any]:
    _, _, y_train, y_val = split
    return {
        "n_train": len(y_train),
        "n_val": len(y_val),
        "positive_rate_train": float(y_train.mean()),
        "positive_rate_val": float(y_val.mean()),
    }
