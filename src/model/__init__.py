"""A trained artifact set, loaded and verified, and how it predicts: the request contract built
from the spec, the encoder from JSON rows to the model's matrix, the compiled trees.

Serving's core: it imports the dataset spec and nothing of training, the loop or the service, and
loads neither scikit-learn nor LightGBM's Python package unless the reference path asks.
"""
