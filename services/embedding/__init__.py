"""The embedding worker: a worker serving `embed` (see services/decode/embed.py)."""
