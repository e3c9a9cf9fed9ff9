"""The training artifact set: written all-or-nothing, read back only after its hashes check out.

Serving reads the spec, the encoding and the trees' text, never a pickle: scikit-learn and
LightGBM's Python package load only when something asks for the pickled pipeline or model (the
reference path, the gate's recomputation, a set from before those files existed)."""

from __future__ import annotations

import functools
import json
import os
import pickle
import platform
import shutil
import subprocess
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

from src.errors import ArtifactError

PIPELINE_FILE = "feature_pipeline.pkl"
MODEL_FILE = "model.pkl"
# The trees as LightGBM writes them (model_to_string): what lleaves compiles, no pickle needed.
MODEL_TEXT_FILE = "model.txt"
# What the fitted pipeline learned, as data: fill values and category codes (serving's encoder).
ENCODING_FILE = "encoding.json"
# The dataset spec the set was trained from: the request contract, the log, drift, the card.
SPEC_FILE = "dataset_spec.yaml"
METRICS_FILE = "metrics.json"
# Validation rows with their training-time probabilities: the service re-predicts them at startup.
SAMPLE_FILE = "sample_rows.json"
# Every validation row's label, probabilities (model, baseline) and groups: the report's curves.
PREDICTIONS_FILE = "validation_predictions.csv"
# The validation rows with their labels.
VALIDATION_ROWS_FILE = "validation_rows.csv"
# The rows training left out by identity (src/holdout.py): the registry adopts its first
# champion's as the holdout its gate judges on.
HOLDOUT_ROWS_FILE = "holdout_rows.csv"
# The training part's features: the reference live traffic is compared against for drift.
REFERENCE_FILE = "reference_rows.csv"
# The bins fitted on them: what the log's hourly statistics count into.
DRIFT_REFERENCE_FILE = "drift_reference.json"
# Gain and mean |SHAP| per model input.
IMPORTANCES_FILE = "feature_importances.csv"
# Mean |exact contribution| per model input on the validation rows (src/model/reasons.py): the
# monitoring job compares the window's attribution shares with it.
SHAP_SUMMARY_FILE = "shap_summary.csv"
# The model card, built by training: the service serves it with its live parts filled in.
CARD_FILE = "model_card.html"
MANIFEST_FILE = "manifest.json"
PICKLES = (PIPELINE_FILE, MODEL_FILE)
STAGING_PREFIX = ".staging-"
# The libraries whose pickles must be read by the same version that wrote them.
PICKLE_LIBRARIES = ("scikit-learn", "lightgbm")
TRACKED_LIBRARIES = ("numpy", "pandas", "scipy", "scikit-learn", "lightgbm", "fairlearn")
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    versions.update({name: metadata.version(name) for name in TRACKED_LIBRARIES})
    return versions


def git_sha(cwd: Path = PROJECT_ROOT) -> str | None:
    """The checkout's commit, else the GIT_SHA variable (set in the image), else None."""
    if os.environ.get("GIT_SHA"):
        return os.environ["GIT_SHA"]
    git = shutil.which("git")
    if git is None:
        return None
    try:
        result = subprocess.run(
            [git, "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    sha = result.stdout.strip()
    return sha if result.returncode == 0 and sha else None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale_staging(outdir: Path) -> None:
    # A run killed by SIGKILL leaves its staging folder behind; it never looked complete.
    for folder in outdir.glob(f"{STAGING_PREFIX}*"):
        pid = folder.name.removeprefix(STAGING_PREFIX).split("-", 1)[0]
        if not (pid.isdigit() and _pid_alive(int(pid))):
            shutil.rmtree(folder, ignore_errors=True)


def _fsync_write(path: Path, data: bytes) -> None:
    with path.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


# What a run writes that says when it ran, not what it trained: kept in metrics.json (the spec asks
# for the timestamp) and the manifest, never in the version, so the same data, code and
# parameters give one version.
VOLATILE_METRICS = ("timestamp", "train_seconds")


def identity_digest(name: str, data: bytes) -> str:
    """A file's hash for the set's identity: its bytes, but metrics.json without the time."""
    import hashlib

    if name == METRICS_FILE:
        metrics = {k: v for k, v in json.loads(data).items() if k not in VOLATILE_METRICS}
        data = json.dumps(metrics, sort_keys=True).encode()
    return hashlib.sha256(data).hexdigest()


def write_artifact_set(outdir: Path, files: dict[str, bytes], manifest: dict[str, Any]) -> None:
    """Write every file into a staging folder, then move them into `outdir`, manifest last.

    The old manifest is removed before the first move, so at every instant the folder holds
    either a complete set whose hashes match its manifest, or no manifest at all: a loader never
    takes a half-written set for a complete one.
    """
    from src.fileio import sha256_file

    outdir.mkdir(parents=True, exist_ok=True)
    _remove_stale_staging(outdir)
    staging = Path(tempfile.mkdtemp(dir=outdir, prefix=f"{STAGING_PREFIX}{os.getpid()}-"))
    try:
        for name, data in files.items():
            _fsync_write(staging / name, data)
        manifest = {
            **manifest,
            "files": {n: sha256_file(staging / n) for n in files},
            "identity": {n: identity_digest(n, data) for n, data in files.items()},
        }
        _fsync_write(staging / MANIFEST_FILE, (json.dumps(manifest, indent=2) + "\n").encode())
        (outdir / MANIFEST_FILE).unlink(missing_ok=True)
        for name in files:
            os.replace(staging / name, outdir / name)
        os.replace(staging / MANIFEST_FILE, outdir / MANIFEST_FILE)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def model_version(manifest: dict[str, Any]) -> str:
    """The set's identity: a hash of what was trained (its files' identity hashes: the data, the
    code's commit, the parameters, the model bytes; not the time). Two sets trained on the same
    data with other seeds or settings differ; the same training run twice is one version. Sets
    from before the identity was recorded are named by their files' hashes, as they were."""
    import hashlib

    identity = manifest.get("identity") or manifest["files"]
    listing = "\n".join(f"{name}:{digest}" for name, digest in sorted(identity.items()))
    return hashlib.sha256(listing.encode()).hexdigest()[:16]


class ModelBundle:
    """A verified artifact set. The pickles are read (and unpickled, after their hash check) only
    when asked for: serving needs the spec, the encoding and the trees' text."""

    def __init__(
        self,
        folder: Path,
        manifest: dict[str, Any],
        metrics: dict[str, Any],
        sample: dict[str, Any],
        card: str | None,
    ) -> None:
        self.folder, self.manifest, self.metrics, self.sample, self.card = (
            folder,
            manifest,
            metrics,
            sample,
            card,
        )
        self._pickles: dict[str, Any] | None = None

    @property
    def version(self) -> str:
        return model_version(self.manifest)

    def _has(self, name: str) -> bool:
        return name in self.manifest["files"]

    @functools.cached_property
    def spec(self) -> Any:
        """The set's dataset spec (a set from before specs: the Adult census spec)."""
        from src.dataset.spec import adult_spec, parse_spec

        if not self._has(SPEC_FILE):
            return adult_spec()
        text = read_verified(self.folder, SPEC_FILE, self.manifest).decode("utf-8")
        return parse_spec(text, str(self.folder / SPEC_FILE))

    @functools.cached_property
    def encoding(self) -> dict[str, Any]:
        """Fill values and category codes (from the pickled pipeline for an older set)."""
        if self._has(ENCODING_FILE):
            return json.loads(read_verified(self.folder, ENCODING_FILE, self.manifest))
        from src.model.encoder import encoding_from_pipeline

        return encoding_from_pipeline(self.pipeline, self.spec)

    @functools.cached_property
    def model_text(self) -> str:
        """The trees as LightGBM's text (from the pickled model for an older set)."""
        if self._has(MODEL_TEXT_FILE):
            return read_verified(self.folder, MODEL_TEXT_FILE, self.manifest).decode("utf-8")
        return str(self.model.booster_.model_to_string())

    @property
    def pipeline(self) -> Any:
        """The fitted scikit-learn ColumnTransformer (the reference path)."""
        return self._unpickled()[PIPELINE_FILE]

    @property
    def model(self) -> Any:
        """The fitted lightgbm.LGBMClassifier (the reference path)."""
        return self._unpickled()[MODEL_FILE]

    def _unpickled(self) -> dict[str, Any]:
        if self._pickles is None:
            self._pickles = unpickle(self.folder, self.manifest)
        return self._pickles


def read_manifest(folder: Path) -> dict[str, Any]:
    path = folder / MANIFEST_FILE
    if not path.is_file():
        raise ArtifactError(
            f"{path}: no manifest; train into this folder first "
            f"(python -m src.train --data data/adult_synth.csv --outdir {folder})"
        )
    try:
        manifest = json.loads(path.read_text())
        manifest["files"][MODEL_FILE]
    except (ValueError, KeyError, TypeError):
        raise ArtifactError(f"{path}: unreadable manifest") from None
    return manifest


def read_verified(folder: Path, name: str, manifest: dict[str, Any]) -> bytes:
    """A file's bytes, after checking them against the manifest's sha256."""
    import hashlib

    path = folder / name
    expected = manifest["files"].get(name)
    if expected is None:
        raise ArtifactError(f"{path}: not listed in the manifest")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ArtifactError(f"{path}: cannot read ({exc.strerror})") from None
    if hashlib.sha256(data).hexdigest() != expected:
        raise ArtifactError(f"{path}: sha256 does not match the manifest (corrupt or replaced)")
    return data


def unpickle(folder: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """The pipeline and the model, each pickle's hash checked before it is unpickled, by the
    library versions that wrote them."""
    installed = library_versions()
    for library in PICKLE_LIBRARIES:
        trained = manifest.get("versions", {}).get(library)
        if trained != installed[library]:
            raise ArtifactError(
                f"{folder}: trained with {library} {trained}, running {installed[library]}; "
                "retrain with the pinned requirements"
            )
    blobs = {name: read_verified(folder, name, manifest) for name in PICKLES}
    try:
        # Trust boundary: the artifact folder is trusted, and its hashes were just verified.
        loaded = {name: pickle.loads(blob) for name, blob in blobs.items()}  # noqa: S301
    except Exception as exc:  # any unpickling failure means the same thing to the caller
        raise ArtifactError(f"{folder}: cannot unpickle the model ({type(exc).__name__})") from None
    if not hasattr(loaded[PIPELINE_FILE], "transform") or not hasattr(
        loaded[MODEL_FILE], "booster_"
    ):
        raise ArtifactError(
            f"{folder}: the pickles do not hold a fitted pipeline and LightGBM model"
        )
    return loaded


def load_bundle(folder: str | Path) -> ModelBundle:
    """Load the artifact set in `folder`: every file the manifest lists is checked against its
    hash (a set with one bad file is a bad set, whatever serving reads of it), then the spec,
    the encoding and the trees' text are read. No pickle is unpickled here."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    for name in manifest["files"]:
        read_verified(folder, name, manifest)
    metrics = json.loads(read_verified(folder, METRICS_FILE, manifest))
    sample = json.loads(read_verified(folder, SAMPLE_FILE, manifest))
    card = None
    if CARD_FILE in manifest["files"]:
        card = read_verified(folder, CARD_FILE, manifest).decode("utf-8")
    bundle = ModelBundle(folder, manifest, metrics, sample, card)
    if MODEL_TEXT_FILE not in manifest["files"]:
        bundle._unpickled()  # an older set: its pickles are its trees
    _ = bundle.spec, bundle.encoding, bundle.model_text  # verified now, not on first use
    return bundle
