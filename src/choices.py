"""What the CLIs offer, declared once and light enough to read before any heavy import, so that
`--help` and argument errors answer at once: the mitigations, the drift check's defaults."""

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

# Fairness, as every report states it.
GAP_LIMIT = 0.10
# A group with fewer rows, or fewer than MIN_GROUP_CLASS rows of either class, gives rates too
# noisy to act on: its numbers are reported and flagged, not hidden.
MIN_GROUP_ROWS = 50
MIN_GROUP_CLASS = 10
# The one headline number per attribute and gap, and its rule, as every report states it.
HEADLINE_RULE = (
    f"the widest gap against the largest group, among groups of at least {MIN_GROUP_ROWS} rows "
    f"with {MIN_GROUP_CLASS} of each class (smaller groups are listed, flagged, not counted)"
)
HEADLINE_INTERVAL = (
    "95%: each group's signed difference from the largest group, plus or minus 1.96 bootstrap "
    "standard errors (paired resamples), taken to its absolute value; the widest over groups"
)
