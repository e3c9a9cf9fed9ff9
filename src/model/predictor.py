"""Serving-time prediction: rows encoded from the spec (src/model/encoder.py), the trees compiled
to native code (lleaves), checked at start against the probe rows training recorded.

A worker imports neither scikit-learn nor LightGBM's Python package: the set's spec, encoding.json
and model.txt are enough. `feature_pipeline.pkl` + `model.pkl` stay the reference: the `pipeline`
engine runs them per request, and a test holds every engine to them on every validation row.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

import numpy as np

from src.errors import ArtifactError
from src.model.artifacts import ModelBundle
from src.model.contract import InputContract
from src.model.encoder import CompiledEncoder
from src.model.reasons import LazyExplainer

logger = logging.getLogger("service")
# Probabilities must match the training-time ones to this (the bar).
MAX_ENGINE_DIFFERENCE = 1e-9
# Below this many rows LightGBM's own predictor is faster on one thread (thread start-up).
BOOSTER_THREADS_FROM = 200


class TreeBuilds(Protocol):
    """Where compiled trees are kept between processes (the registry's store)."""

    def read(self) -> bytes | None: ...

    def keep(self, object_code: bytes) -> None: ...


class Predictor:
    """Probabilities for encoded rows, from one of three engines that must agree to 1e-9."""

    def __init__(
        self,
        bundle: ModelBundle,
        *,
        engine: str,
        max_rows: int | None = None,
        builds: TreeBuilds | None = None,
    ) -> None:
        self.bundle = bundle
        self.engine = engine
        self.spec = bundle.spec
        self.contract = InputContract(self.spec)
        self.encoder = CompiledEncoder.from_spec(self.spec, bundle.encoding)
        self.adapter = self.contract.adapter(max_rows)
        self.threshold = float(bundle.manifest["decision_threshold"])
        self.version = bundle.version
        self._compiled = _lleaves(bundle.model_text, builds) if engine == "lleaves" else None
        self._booster = _booster(bundle.model_text) if engine == "booster" else None
        # Reasons (exact contributions) need LightGBM: loaded when a request first asks.
        self.explainer = LazyExplainer(bundle.model_text, self.encoder)

    def probabilities(self, matrix: np.ndarray) -> np.ndarray:
        if self._compiled is not None:
            rows = np.ascontiguousarray(matrix, dtype=np.float64)
            out = np.empty(len(rows))
            self._compiled[0](rows.ctypes.data, out.ctypes.data, 0, len(rows))
            return out
        booster = self._booster if self._booster is not None else self.bundle.model.booster_
        threads = 1 if len(matrix) < BOOSTER_THREADS_FROM else 2
        return booster.predict(matrix, num_threads=threads)

    def pipeline_probabilities(self, rows: list[dict[str, Any]]) -> np.ndarray:
        """The reference path: the rows read as a table by the spec, through the pickled
        pipeline and model."""
        from src.dataset.table import rows_frame

        frame = rows_frame(self.spec, rows)
        matrix = self.bundle.pipeline.transform(frame)
        threads = 1 if len(frame) < BOOSTER_THREADS_FROM else 2
        return self.bundle.model.predict_proba(matrix, num_threads=threads)[:, 1]

    def predict_rows(self, rows: list[dict[str, Any]]) -> np.ndarray:
        """Probabilities for rows the contract has accepted, through the configured engine."""
        if self.engine == "pipeline":
            return self.pipeline_probabilities(rows)
        matrix = self.encoder.encode(rows)
        if matrix is None:  # the contract accepted what the encoder did not: a bug, not bad input
            raise RuntimeError("validated rows failed to encode")
        return self.probabilities(matrix)

    def self_check(self) -> float:
        """Predict the probe rows recorded at training time; raise unless every probability
        matches what the trained pipeline and model gave them."""
        sample = self.bundle.sample
        rows = self.adapter.validate_python(sample["rows"])
        got = self.predict_rows(rows)
        expected = np.asarray(sample["probabilities"])
        worst = float(np.abs(got - expected).max())
        if not worst <= MAX_ENGINE_DIFFERENCE:
            raise ArtifactError(
                f"the {self.engine} engine disagrees with training-time probabilities "
                f"by {worst:.2e}"
            )
        return worst


def _booster(model_text: str) -> Any:
    import lightgbm as lgb

    return lgb.Booster(model_str=model_text)


def _lleaves(model_text: str, builds: TreeBuilds | None) -> tuple[Any, Any]:
    """The compiled trees: from `builds` when kept there (verified by its hash), else compiled
    now and kept for the next process."""
    from src.model.compiled import compiled_trees

    cached = builds.read() if builds is not None else None
    if cached is not None:
        try:
            entry, keep_alive, _ = compiled_trees(model_text, cached)
            return entry, keep_alive
        except Exception as exc:  # an object LLVM cannot load: compile instead, as on a miss
            logger.warning("compiled trees unusable (%s); compiling", type(exc).__name__)
    entry, keep_alive, code = compiled_trees(model_text)
    if builds is not None:
        try:
            builds.keep(code)
        except Exception as exc:  # a read-only store: serve anyway, compile again next time
            logger.warning("could not keep the compiled trees: %s", exc)
    return entry, keep_alive
