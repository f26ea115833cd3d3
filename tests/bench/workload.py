"""Many users sharing long prefixes: the workload KV-aware routing is for.

Each user has a system prompt (one of `prefixes`, shared with other users) and a
conversation history that grows by every turn's fresh suffix, until it would pass
`history_tokens` and the user starts a new conversation. A request is
system prompt + history + fresh suffix; arrivals are Poisson at `rate` (0: back to back).

    wl = Workload(WorkloadSpec(users=64, prefixes=8, prefix_tokens=1024, suffix_tokens=64, rate=50))
    for req in wl.requests(1000): req.token_ids, req.text(), req.at
    async for req in wl.arrivals(1000): ...   # paced by the arrival times

python -m tests.bench.workload --users 64 --prefixes 8 --requests 1000   # prints the workload's shape
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import asdict, dataclass, field

VOCAB = ("time person year way day thing man world life hand part child eye woman place work week "
         "case point number group problem fact the of and to in is was for on that with as").split()


@dataclass(frozen=True)
class WorkloadSpec:
    users: int = 64
    prefixes: int = 8  # distinct system prompts; user u has prompt u % prefixes
    prefix_tokens: int = 1024
    history_tokens: int = 512  # a conversation's history is reset past this
    suffix_tokens: int = 64  # fresh tokens per request
    rate: float = 0.0  # requests/s over all users, Poisson arrivals; 0: back to back
    vocab: int = 32000
    seed: int = 0


@dataclass(frozen=True)
class Request:
    at: float  # seconds from the start of the run
    user: int
    token_ids: list[int]

    def text(self) -> str:
        """The prompt as words (for HTTP benchmarks; a word is not a token)."""
        return " ".join(VOCAB[t % len(VOCAB)] for t in self.token_ids)


@dataclass
class _User:
    system: list[int]
    history: list[int] = field(default_factory=list)


class Workload:
    def __init__(self, spec: WorkloadSpec) -> None:
        self.spec = spec
        self._rng = random.Random(f"{spec.seed}-requests")
        heads = random.Random(f"{spec.seed}-prefixes")  # the same prefixes for any user count or rate
        systems = [self._tokens(spec.prefix_tokens, heads) for _ in range(max(1, spec.prefixes))]
        self.users = [_User(systems[u % len(systems)]) for u in range(spec.users)]
        self._clock = 0.0

    def _tokens(self, n: int, rng: random.Random | None = None) -> list[int]:
        r = rng or self._rng
        return [r.randrange(self.spec.vocab) for _ in range(n)]

    def next(self) -> Request:
        s = self.spec
        if s.rate > 0:
            self._clock += self._rng.expovariate(s.rate)
        uid = self._rng.randrange(len(self.users))
        user = self.users[uid]
        suffix = self._tokens(s.suffix_tokens)
        if len(user.history) + len(suffix) > s.history_tokens:
            user.history = []  # a new conversation
        prompt = user.system + user.history + suffix
        user.history = user.history + suffix
        return Request(self._clock, uid, prompt)

    def requests(self, n: int) -> Iterator[Request]:
        for _ in range(n):
            yield self.next()

    async def arrivals(self, n: int) -> AsyncIterator[Request]:
        """Requests released at their arrival times (immediately when rate is 0)."""
        start = time.monotonic()
        for req in self.requests(n):
            delay = start + req.at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            yield req


def reusable_fraction(reqs: list[Request], page_size: int = 16) -> float:
    """Share of prompt blocks whose prefix came earlier: the hit rate of one unbounded cache."""
    from shared.kv.hashing import block_hashes

    seen: set[int] = set()
    hit = total = 0
    for r in reqs:
        hashes = block_hashes(r.token_ids, page_size)
        hit += sum(1 for h in hashes if h in seen)
        total += len(hashes)
        seen.update(hashes)
    return hit / max(1, total)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name, default in asdict(WorkloadSpec()).items():
        p.add_argument(f"--{name.replace('_', '-')}", type=type(default), default=default)
    p.add_argument("--requests", type=int, default=1000)
    a = vars(p.parse_args())
    n = a.pop("requests")
    spec = WorkloadSpec(**a)
    reqs = list(Workload(spec).requests(n))
    lens = sorted(len(r.token_ids) for r in reqs)
    print(json.dumps({**asdict(spec), "requests": n, "prompt_tokens_p50": lens[n // 2], "prompt_tokens_max": lens[-1],
                      "span_s": round(reqs[-1].at, 2), "reusable_fraction": round(reusable_fraction(reqs), 3)}))


if __name__ == "__main__":
    main()
