"""What the CLIs offer, declared once and light enough to read before any heavy import, so that
`--help` and argument errors answer at once: the mitigations, the spec's acceptance bar, the drift
check's defaults."""

MIN_ROC_AUC = 0.83  # the spec's acceptance bar
# Fairness mitigations: the ones training can apply, and the ones only measured (mitigation.py).
TRAINABLE = ("none", "no_proxy", "reweighing")
EVALUATED_ONLY = ("exponentiated_gradient", "threshold_optimizer")
CANDIDATES = TRAINABLE + EVALUATED_ONLY
# Needs the sensitive attribute at decision time: never run unless named.
OPT_IN = ("threshold_optimizer",)
DEFAULT_CANDIDATES = tuple(c for c in CANDIDATES if c not in OPT_IN)
# Drift: the PSI from which a feature drifts, quantile bins for numerics, and the window the
# monitoring job compares with the reference.
DEFAULT_THRESHOLD = 0.2
DEFAULT_BINS = 10
DEFAULT_WINDOW_HOURS = 24
