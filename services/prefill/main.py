"""python -m services.prefill: parse args -> build engine -> register -> serve prefill requests."""

from __future__ import annotations

import sys

from services.decode.worker import serve_worker
from services.prefill.args import parse
from services.prefill.handler import prefill_role
from shared.runtime.service import Service, run


async def amain(argv: list[str]) -> None:
    cfg = parse(argv)
    async with Service("prefill", cfg.common) as svc:
        await serve_worker(svc, cfg, prefill_role)


def main() -> None:
    run(lambda: amain(sys.argv[1:]))


if __name__ == "__main__":
    main()
