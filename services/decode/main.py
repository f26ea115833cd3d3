"""python -m services.decode: the worker as it is configured (aggregated, or a decode half)."""

from __future__ import annotations

from services.worker.preset import Preset

PRESET = Preset("decode")
parse, main = PRESET.parse, PRESET.main

if __name__ == "__main__":
    main()
