"""Drift, fit-then-compare: bins learned from a reference, counts compared with PSI, KS and
chi-square. Training stores the bins with a model; the loop counts its hourly rows into them.

It imports the dataset spec only: never training, the service or the loop.
"""
