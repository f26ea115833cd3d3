"""python -m services.embedding: the worker with --embedding, serving component `embedding` unless given."""

from __future__ import annotations

from services.worker.preset import Preset

PRESET = Preset("embedding", ("--embedding", "--component", "embedding"))
parse, main = PRESET.parse, PRESET.main

if __name__ == "__main__":
    main()
