"""A worker process under a service name: parse args -> build engine -> register -> serve the configured role.

`python -m services.worker` is the plain one; `python -m services.decode|prefill|embedding|diffusion`
are presets of it: the same flags, with a few given first (the user's own still win).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass

from services.worker.args import WorkerConfig
from services.worker.args import parse as parse_worker
from services.worker.lifecycle import serve_worker
from shared.runtime.service import Service, run


@dataclass(frozen=True)
class Preset:
    """A worker under its own service name, with flags given before the user's."""

    service: str
    flags: Sequence[str] = ()

    def parse(self, argv: list[str]) -> WorkerConfig:
        return parse_worker([*self.flags, *argv])

    async def amain(self, argv: list[str]) -> None:
        cfg = self.parse(argv)
        async with Service(self.service, cfg.common) as svc:
            if cfg.fleet.simulate > 0:
                from services.worker.fleet import serve_fleet

                await serve_fleet(svc, cfg)
            else:
                await serve_worker(svc, cfg)

    def main(self) -> None:
        run(lambda: self.amain(sys.argv[1:]))
