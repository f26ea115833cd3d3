"""The embedding worker: a worker serving `embed` (see services/worker/roles/embedding.py)."""
