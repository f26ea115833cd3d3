"""The score worker: a worker serving `score` with a cross-encoder (see services/worker/roles/score.py)."""
