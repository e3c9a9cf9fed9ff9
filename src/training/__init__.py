"""Training, from a table and its dataset spec: the rows (data), the holdout by row identity,
the features, the search, the fit, evaluation and fairness, the mitigations, and the artifact set.

It may import the dataset spec, the model package's artifact helpers and drift's reference
fitting; never the service, the loop's writer or the report (the entry points hand training the
report's renderer). `train.train` is the one call that turns a table into an artifact set.
"""
