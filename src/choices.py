"""What the CLIs offer, declared once and light enough to read before any heavy import, so that
`--help` and argument errors answer at once: the mitigations, the spec's acceptance bar."""

MIN_ROC_AUC = 0.83  # the spec's acceptance bar
# Fairness mitigations: the ones training can apply, and the ones only measured (mitigation.py).
TRAINABLE = ("none", "no_proxy", "reweighing")
EVALUATED_ONLY = ("exponentiated_gradient", "threshold_optimizer")
CANDIDATES = TRAINABLE + EVALUATED_ONLY
