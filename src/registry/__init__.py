"""The model registry: immutable versions (artifact sets named by their content hash, copied into
a store), the aliases `champion` (what is served) and `challenger`, and an append-only history.

Kept in the project's own database, beside the prediction log (SQLite by default, PostgreSQL for
many replicas). `core` is all the service reads (which version is champion, where its files are)
and imports no training code; `gate` compares a challenger with the champion and may import it.
"""
