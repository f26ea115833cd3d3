"""The reference engine's scheduler alone: chunked prefill, decodes first, waiting and preemption."""

from __future__ import annotations

from protocol.messages import EngineRequest
from shared.engine.reference.scheduler import Scheduled, Scheduler
from shared.engine.reference.sequence import SamplingSpec, Sequence
from shared.kv.block_pool import BlockPool


def seq(n: int, start: int = 0) -> Sequence:
    tokens = list(range(start, start + n))
    return Sequence(EngineRequest(request_id=str(start), token_ids=tokens), tokens, n, SamplingSpec(), frozenset())


def run(step: list[Scheduled]) -> None:
    """What the engine does after a step: KV computed, a token drawn where the chunk ends the sequence."""
    for s in step:
        s.seq.num_computed = s.start + s.num_tokens
        if s.samples:
            s.seq.tokens.append(1)


def test_long_prompt_is_chunked_and_decodes_keep_going() -> None:
    sched = Scheduler(BlockPool(64, 4), max_running=8, max_batched_tokens=10)
    short = seq(3)
    sched.waiting.append(short)
    run(sched.schedule())
    long = seq(40, start=100)
    sched.waiting.append(long)
    for _ in range(4):
        step = sched.schedule()
        assert step[0].seq is short and step[0].num_tokens == 1  # the decode is never starved
        assert sum(s.num_tokens for s in step) <= 10
        run(step)
    assert long.num_computed == 36


def test_request_waits_until_blocks_free() -> None:
    pool = BlockPool(4, 4)
    sched = Scheduler(pool, max_running=8, max_batched_tokens=64)
    first, second = seq(12), seq(12, start=50)
    sched.waiting.extend([first, second])
    assert [s.seq for s in sched.schedule()] == [first]
    assert list(sched.waiting) == [second]
    sched.remove(first)
    assert [s.seq for s in sched.schedule()] == [second]


def test_out_of_blocks_preempts_the_newest() -> None:
    sched = Scheduler(BlockPool(6, 4), max_running=8, max_batched_tokens=64)
    old, new = seq(12), seq(12, start=50)
    sched.waiting.extend([old, new])
    run(sched.schedule())
    step = sched.schedule()  # old's next token needs a 4th block: new goes back to wait
    assert [s.seq for s in step] == [old]
    assert list(sched.waiting) == [new] and new.table is None and new.num_computed == 0
    assert sched.num_preemptions == 1
