"""Reproducible training, from a table and its spec: the holdout left out, split, randomized HPO
by CV, final fit, evaluation, the artifact set (all or nothing). The CLI is src/train.py."""

from __future__ import annotations

import pickle
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd

from src.choices import HEADLINE_INTERVAL, HEADLINE_RULE
from src.dataset.groups import groups_frame
from src.dataset.spec import DatasetSpec, adult_spec
from src.dataset.table import as_table, request_rows
from src.fileio import dumps_json
from src.model.artifacts import (
    DRIFT_REFERENCE_FILE,
    ENCODING_FILE,
    HOLDOUT_ROWS_FILE,
    IMPORTANCES_FILE,
    METRICS_FILE,
    MODEL_FILE,
    MODEL_TEXT_FILE,
    PIPELINE_FILE,
    PREDICTIONS_FILE,
    REFERENCE_FILE,
    SAMPLE_FILE,
    SHAP_SUMMARY_FILE,
    SPEC_FILE,
    VALIDATION_ROWS_FILE,
    git_sha,
    library_versions,
    write_artifact_set,
)
from src.model.reasons import by_group, mean_abs
from src.monitoring.drift import fit_reference, references_to_json
from src.training.data import (
    Split,
    TrainingData,
    carve_holdout,
    log,
    read_training_data,
    split_dataset,
)
from src.training.evaluate import (
    classification_metrics,
    group_fairness,
    headline_gap_intervals,
    headline_gaps,
    mitigation_note,
    paired_auc_difference,
)
from src.training.fit import FittedModel, check_proxies, encode, fit_baseline, fit_model
from src.training.mitigation import fit_choice
from src.training.search import CV_FOLDS, search_hyperparameters

DECISION_THRESHOLD = 0.5
SAMPLE_ROWS = 32
HEADLINE_DRAWS = 1000  # bootstrap resamples of the validation rows for the headline gaps
# Renders the human-readable documents (the card, fairness.md) from the other files: the report
# package's, passed in by the entry points (training never imports the report).
Documents = Callable[[dict[str, bytes]], dict[str, bytes]]


@dataclass(frozen=True)
class TrainResult:
    metrics: dict[str, Any]
    outdir: Path


def feature_importances(
    model: lgb.LGBMClassifier, contributions: np.ndarray, names: list[str]
) -> pd.DataFrame:
    """LightGBM gain and mean |SHAP| (LightGBM's own pred_contrib) per model input, sorted."""
    booster = model.booster_
    frame = pd.DataFrame(
        {
            "feature": names,
            "gain": booster.feature_importance(importance_type="gain"),
            "mean_abs_shap": np.abs(contributions[:, :-1]).mean(axis=0),  # last column: bias
        }
    )
    # Sorted by mean |SHAP|, like the report's chart: what moves a prediction, not split counts.
    return frame.sort_values(["mean_abs_shap", "feature"], ascending=[False, True]).reset_index(
        drop=True
    )


def sample_rows(spec: DatasetSpec, x_val: pd.DataFrame, proba: np.ndarray) -> dict[str, Any]:
    """The first validation rows as a client would send them (JSON, null for missing), with the
    probabilities the trained pipeline gave them: the service's startup check (probe rows) and
    API example. A quarter are rows with missing values, so the check covers imputation too."""
    has_missing = np.flatnonzero(x_val.isna().any(axis=1).to_numpy())[: SAMPLE_ROWS // 4]
    complete = np.flatnonzero(x_val.notna().all(axis=1).to_numpy())
    positions = np.sort(np.concatenate([complete[: SAMPLE_ROWS - len(has_missing)], has_missing]))
    rows = request_rows(spec, x_val.iloc[positions])
    return {"rows": rows, "probabilities": proba[positions].tolist()}


def encoding_json(spec: DatasetSpec, pipeline: Any) -> dict[str, Any]:
    """What the fitted pipeline learned, as data: each numeric input's fill value and each
    categorical input's codes. Serving encodes rows from this and the spec, without
    scikit-learn (the pickled pipeline stays the reference, and a test holds the two equal)."""
    from src.model.encoder import encoding_from_pipeline

    return encoding_from_pipeline(pipeline, spec)


def fairness_block(
    spec: DatasetSpec,
    fitted: FittedModel,
    proxies: dict[str, Any],
    x_val: pd.DataFrame,
    y_val: pd.Series,
    seed: int,
) -> dict[str, Any]:
    """Per-group rates and gaps for the spec's fairness attributes, the proxy check, and what
    to try."""
    groups = groups_frame(spec, x_val)
    by_attribute = {
        a: group_fairness(y_val.to_numpy(), fitted.proba, sensitive_features=groups[a], seed=seed)
        for a in groups.columns
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
        "headline_gaps": headline_gaps(y, fitted.proba, groups),
        "headline_gaps_ci95": headline_gap_intervals(
            y, fitted.proba >= DECISION_THRESHOLD, groups, picks
        ),
        "headline_rule": HEADLINE_RULE,
        "headline_interval": HEADLINE_INTERVAL,
        "proxy_check": proxies,
        "mitigations": mitigations,
    }


def attribution_block(
    spec: DatasetSpec, contributions: np.ndarray, names: list[str], x_val: pd.DataFrame
) -> dict[str, Any]:
    """Exact contributions on the validation rows: mean |contribution| per input, and for each
    fairness attribute each group's mean contribution per input (the differences from the
    largest group add up to the gap in mean score: those inputs are where a gap comes from)."""
    summary = mean_abs(contributions, names)
    groups = groups_frame(spec, x_val)
    return {
        "unit": "log-odds",
        "rows": len(contributions),
        "base_value": float(contributions[0, -1]) if len(contributions) else None,
        "mean_abs": dict(sorted(summary.items(), key=lambda item: (-item[1], item[0]))),
        "by_group": {a: by_group(contributions, names, groups[a]).as_dict() for a in groups},
    }


def shap_summary(metrics: dict[str, Any]) -> pd.DataFrame:
    """shap_summary.csv: column, mean |contribution| on the validation rows, largest first."""
    mean = metrics["attributions"]["mean_abs"]
    return pd.DataFrame({"column": list(mean), "mean_abs_contribution": list(mean.values())})


def _csv(frame: pd.DataFrame) -> bytes:
    return frame.to_csv(index=False, lineterminator="\n").encode()


def artifact_files(
    spec: DatasetSpec,
    fitted: FittedModel,
    metrics: dict[str, Any],
    split: Split,
    baseline_proba: np.ndarray,
    holdout_rows: bytes,
    contributions: np.ndarray,
) -> dict[str, bytes]:
    x_train, x_val, _, y_val = split
    importances = feature_importances(fitted.model, contributions, fitted.names)
    predictions = pd.DataFrame(
        {
            "y_true": y_val.to_numpy(),
            "probability": fitted.proba,
            "baseline_probability": baseline_proba,
            **{a: g.to_numpy() for a, g in groups_frame(spec, x_val).items()},
        }
    )
    label = spec.label
    labels = np.where(y_val.to_numpy() == 1, label.positives[0], label.negatives[0])
    features = list(spec.features)
    return {
        PIPELINE_FILE: pickle.dumps(fitted.pipeline, protocol=5),
        MODEL_FILE: pickle.dumps(fitted.model, protocol=5),
        MODEL_TEXT_FILE: fitted.model.booster_.model_to_string().encode(),
        ENCODING_FILE: dumps_json(encoding_json(spec, fitted.pipeline)).encode(),
        SPEC_FILE: spec.to_yaml().encode(),
        METRICS_FILE: dumps_json(metrics).encode(),
        IMPORTANCES_FILE: _csv(importances),
        SHAP_SUMMARY_FILE: _csv(shap_summary(metrics)),
        SAMPLE_FILE: dumps_json(sample_rows(spec, x_val, fitted.proba)).encode(),
        HOLDOUT_ROWS_FILE: holdout_rows,
        PREDICTIONS_FILE: _csv(predictions),
        REFERENCE_FILE: _csv(as_table(spec, x_train[features])),
        DRIFT_REFERENCE_FILE: references_to_json(fit_reference(spec, x_train[features])).encode(),
        VALIDATION_ROWS_FILE: _csv(
            as_table(spec, x_val[features]).assign(**{label.column: labels})
        ),
    }


def build_manifest(spec: DatasetSpec, metrics: dict[str, Any]) -> dict[str, Any]:
    return {
        "created_at": metrics["timestamp"],
        "git_sha": metrics["git_sha"],
        "data_sha256": metrics["data"]["sha256"],
        "seed": metrics["seed"],
        "decision_threshold": DECISION_THRESHOLD,
        "dataset": {"name": spec.name, "spec_sha256": spec.digest},
        "model_inputs": metrics["model_inputs"],
        "sensitive": list(spec.sensitive),
        "mitigation": metrics["mitigation"],
        "versions": metrics["versions"],
        # The gate judges only a set that left the registry's holdout out (holdout.py), and
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
    spec: DatasetSpec,
    fitted: FittedModel,
    baseline_proba: np.ndarray,
    fairness: dict[str, Any],
    split: Split,
    *,
    params: dict[str, Any],
    trials_log: list[dict[str, Any]],
    run: dict[str, Any],
) -> dict[str, Any]:
    """metrics.json: validation metrics, the baseline, the search, fairness, acceptance.
    `run` holds what the caller chose: seed, val_size, trials and the data's provenance."""
    y_val = split[3]
    model_metrics = classification_metrics(y_val, fitted.proba, threshold=DECISION_THRESHOLD)
    return {
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
        "sensitive_excluded": list(spec.sensitive),
        "mitigation": fitted.mitigation.describe(),
        "versions": library_versions(),
        "baseline": {
            "model": "LogisticRegression (one-hot, scaled)",
            **classification_metrics(y_val, baseline_proba, threshold=DECISION_THRESHOLD),
            "comparison": baseline_comparison(y_val, fitted.proba, baseline_proba, run["seed"]),
        },
        "acceptance": {
            "min_roc_auc": spec.min_roc_auc,
            "passed": model_metrics["roc_auc"] >= spec.min_roc_auc,
        },
        "fairness": {**fairness, "overall_roc_auc": model_metrics["roc_auc"]},
    }


def _hyperparameters(
    data: TrainingData, split: Split, trials: int, seed: int, params: dict[str, Any] | None
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    if params is not None and not trials:
        log("hpo: skipped, hyperparameters given")
        return dict(params), []
    log(
        f"hpo: {trials} trials x {CV_FOLDS}-fold CV on the training part"
        if trials
        else "hpo: skipped"
    )
    return search_hyperparameters(data.spec, split[0], split[2], trials=trials, seed=seed)


def train(
    data: Path | TrainingData,
    outdir: Path,
    *,
    spec: DatasetSpec | None = None,
    seed: int = 42,
    val_size: float = 0.2,
    trials: int = 20,
    mitigation: str = "none",
    params: dict[str, Any] | None = None,
    documents: Documents | None = None,
) -> TrainResult:
    """Train, evaluate once on validation, and write the artifact set into `outdir`. `data` is a
    table (with `spec`, default the Adult census spec) or rows already read (a retraining's).
    The holdout's rows are left out first. Given `params` (and no trials), those hyperparameters
    are used without a search. `documents` renders the card and fairness.md into the set."""
    started = time.perf_counter()
    if not isinstance(data, TrainingData):
        data = read_training_data(Path(data), spec or adult_spec())
    spec = data.spec
    carved = carve_holdout(spec, data.dataset)
    log(
        f"holdout: {carved.holdout['rows_excluded']} rows left out for the registry's gate "
        f"({carved.holdout['rule']})"
    )
    split = split_dataset(carved.dataset, val_size=val_size, seed=seed)
    x_train, x_val, y_train, y_val = split
    log(f"data: {len(x_train)} train / {len(x_val)} validation rows, {y_train.mean():.1%} positive")
    params, trials_log = _hyperparameters(data, split, trials, seed, params)
    encoded = encode(spec, x_train, x_val)
    log("fairness: proxy check")
    proxies = check_proxies(encoded, x_train, seed)
    choice = fit_choice(mitigation, proxies, groups_frame(spec, x_train), y_train.to_numpy())
    if mitigation != "none":
        log(f"mitigation: {choice.describe()}")
    log("fit: the final model on every training row")
    fitted = fit_model(encoded, y_train, params, seed, choice)
    baseline_proba = fit_baseline(spec, x_train, y_train, x_val)
    log("fairness: groups and gaps")
    fairness = fairness_block(spec, fitted, proxies, x_val, y_val, seed)
    provenance = {**data.provenance, "holdout": carved.holdout}
    run = {"seed": seed, "val_size": val_size, "trials": trials, "data": provenance}
    metrics = assemble_metrics(
        spec, fitted, baseline_proba, fairness, split, params=params, trials_log=trials_log, run=run
    )
    log("reasons: exact contributions on the validation rows")
    contributions = fitted.model.booster_.predict(fitted.val_matrix, pred_contrib=True)
    metrics["attributions"] = attribution_block(spec, contributions, fitted.names, x_val)
    metrics["train_seconds"] = round(time.perf_counter() - started, 2)
    files = artifact_files(
        spec, fitted, metrics, split, baseline_proba, carved.holdout_rows, contributions
    )
    if documents is not None:
        files.update(documents(files))
    write_artifact_set(outdir, files, build_manifest(spec, metrics))
    return TrainResult(metrics=metrics, outdir=outdir)


def split_summary(split: Split) -> dict[str, Any]:
    _, _, y_train, y_val = split
    return {
        "n_train": len(y_train),
        "n_val": len(y_val),
        "positive_rate_train": float(y_train.mean()),
        "positive_rate_val": float(y_val.mean()),
    }


__all__ = ["TrainResult", "TrainingData", "train"]
