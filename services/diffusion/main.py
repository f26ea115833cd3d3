"""python -m services.diffusion: the worker with --engine diffusion (unless given), serving component `backend`.

The frontend serves its model like any chat/completions model; the model card
says `engine: diffusion`. `--engine sglang` (with SGLang's own --dllm-algorithm
and --dllm-algorithm-config) serves a real dLLM such as LLaDA2 on a GPU.
"""

from __future__ import annotations

from services.worker.preset import Preset

PRESET = Preset("diffusion", ("--engine", "diffusion"))
parse, main = PRESET.parse, PRESET.main

if __name__ == "__main__":
    main()
