"""python -m services.worker: the worker as its flags configure it."""

from __future__ import annotations

from services.worker.preset import Preset

PRESET = Preset("worker")
parse, main = PRESET.parse, PRESET.main

if __name__ == "__main__":
    main()
