"""python -m services.embedding: the worker with --embedding, serving component `embedding`."""

from __future__ import annotations

import sys

from services.decode.args import WorkerConfig
from services.decode.args import parse as parse_worker
from services.decode.worker import serve_worker
from shared.runtime.service import Service, run


def parse(argv: list[str]) -> WorkerConfig:
    """The decode worker's flags; `--embedding` always, component `embedding` unless given."""
    return parse_worker(["--embedding", "--component", "embedding", *argv])


async def amain(argv: list[str]) -> None:
    cfg = parse(argv)
    async with Service("embedding", cfg.common) as svc:
        await serve_worker(svc, cfg)


def main() -> None:
    run(lambda: amain(sys.argv[1:]))


if __name__ == "__main__":
    main()
