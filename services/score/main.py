"""python -m services.score: the worker with --score (a cross-encoder), serving component `score` unless given."""

from __future__ import annotations

from services.worker.preset import Preset

PRESET = Preset("score", ("--score", "--component", "score"))
parse, main = PRESET.parse, PRESET.main

if __name__ == "__main__":
    main()
