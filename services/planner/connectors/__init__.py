"""How the planner acts: `local` (worker processes on this machine) or `kubernetes` (Deployment replicas)."""

from __future__ import annotations

from typing import Protocol

from services.planner.observe import Pool


class Connector(Protocol):
    def pools(self) -> list[Pool]:
        """Pools to size even before any of their workers is live (the local one's: it starts the first)."""
        ...

    def handles(self, pool: Pool) -> bool:
        """Whether this connector can resize `pool` (the local one starts one kind of worker)."""
        ...

    async def scale(self, pool: Pool, actual: int, desired: int) -> int:
        """Move `pool` from `actual` live workers towards `desired`, once the change is under way: the count
        it is moving to (short of `desired` where the connector cannot go all the way)."""
        ...

    async def close(self) -> None:
        ...
