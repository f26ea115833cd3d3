"""python -m services.diffusion: the worker with --engine diffusion, serving component `backend`.

The frontend serves its model like any chat/completions model; the model card
says `engine: diffusion`. `--engine sglang` (with SGLang's own --dllm-algorithm
and --dllm-algorithm-config) serves a real dLLM such as LLaDA2 on a GPU.
"""

from __future__ import annotations

import sys

from services.decode.args import WorkerConfig
from services.decode.args import parse as parse_worker
from services.decode.worker import serve_worker
from shared.runtime.service import Service, run


def parse(argv: list[str]) -> WorkerConfig:
    """The decode worker's flags, with `--engine diffusion` unless given."""
    return parse_worker(["--engine", "diffusion", *argv])


async def amain(argv: list[str]) -> None:
    cfg = parse(argv)
    async with Service("diffusion", cfg.common) as svc:
        await serve_worker(svc, cfg)


def main() -> None:
    run(lambda: amain(sys.argv[1:]))


if __name__ == "__main__":
    main()
