"""python -m services.prefill: the worker with --disaggregation-mode prefill, serving component `prefill`."""

from __future__ import annotations

from services.worker.preset import Preset

PRESET = Preset("prefill", ("--disaggregation-mode", "prefill"))
parse, main = PRESET.parse, PRESET.main

if __name__ == "__main__":
    main()
