"""python -m services.decode: parse args -> build engine -> register -> serve."""

from __future__ import annotations

import sys

from services.decode.args import parse
from services.decode.worker import serve_worker
from shared.runtime.service import Service, run


async def amain(argv: list[str]) -> None:
    cfg = parse(argv)
    async with Service("decode", cfg.common) as svc:
        await serve_worker(svc, cfg)


def main() -> None:
    run(lambda: amain(sys.argv[1:]))


if __name__ == "__main__":
    main()
