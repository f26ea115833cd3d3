"""EngineRequest -> SGLang arguments and SGLang stream items -> OutputChunk (pure; no sglang needed)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from protocol.messages import (
    BootstrapInfo,
    EngineRequest,
    OutputOptions,
    RoutingHints,
    SamplingOptions,
    StopConditions,
    TopLogprob,
    Usage,
)
from shared.engine.base import EngineError, EngineLoad
from shared.engine.sglang.args import SglangConfig
from shared.engine.sglang.info import load_from_snapshots, runtime_config
from shared.engine.sglang.mapping import OutputCursor, error_from_exception, finish_of, generate_kwargs, sampling_params


def _req(**kw: Any) -> EngineRequest:
    return EngineRequest(request_id="r1", token_ids=[5, 6, 7], **kw)


def test_sampling_params_carry_every_option() -> None:
    req = _req(
        sampling=SamplingOptions(temperature=0.7, top_p=0.9, top_k=40, min_p=0.05, seed=1234,
                                 repetition_penalty=1.1, frequency_penalty=0.2, presence_penalty=0.3),
        stop=StopConditions(max_tokens=77, min_tokens=3, stop_token_ids=[2, 9], stop=["</s>"], ignore_eos=True),
        output=OutputOptions(skip_special_tokens=False),
    )
    assert sampling_params(req) == {
        "max_new_tokens": 77, "min_new_tokens": 3, "temperature": 0.7, "top_p": 0.9, "top_k": 40,
        "min_p": 0.05, "repetition_penalty": 1.1, "frequency_penalty": 0.2, "presence_penalty": 0.3,
        "ignore_eos": True, "skip_special_tokens": False, "stop_token_ids": [2, 9], "sampling_seed": 1234,
    }  # no stop strings: the frontend matches them


def test_defaults_leave_seed_and_stop_ids_out() -> None:
    params = sampling_params(_req())
    assert "sampling_seed" not in params and "stop_token_ids" not in params
    assert params["top_k"] == -1 and params["max_new_tokens"] == 16 and params["temperature"] == 1.0


def test_generate_kwargs_stream_rid_logprobs_bootstrap() -> None:
    req = _req(output=OutputOptions(logprobs=3), bootstrap=BootstrapInfo(host="10.0.0.7", port=8998, room=42),
               routing=RoutingHints(dp_rank=1))
    kw = generate_kwargs(req)
    assert kw["input_ids"] == [5, 6, 7] and kw["rid"] == "r1" and kw["stream"] is True
    assert kw["return_logprob"] is True and kw["top_logprobs_num"] == 3
    assert (kw["bootstrap_host"], kw["bootstrap_port"], kw["bootstrap_room"]) == ("10.0.0.7", 8998, 42)
    assert kw["routed_dp_rank"] == 1
    plain = generate_kwargs(_req())
    assert not {"return_logprob", "top_logprobs_num", "bootstrap_room", "routed_dp_rank", "lora_path"} & plain.keys()


def test_a_request_with_an_adapter_passes_its_name_as_lora_path() -> None:
    assert generate_kwargs(_req(lora="sql-adapter"))["lora_path"] == "sql-adapter"


def _meta(finish: Any = None, **kw: Any) -> dict[str, Any]:
    return {"finish_reason": finish, "prompt_tokens": 3, "completion_tokens": kw.pop("n", 0),
            "cached_tokens": kw.pop("cached", 0), **kw}


def test_cumulative_stream_yields_only_new_tokens() -> None:
    """Without incremental output SGLang re-sends (and keeps growing) the same list."""
    cur = OutputCursor(incremental=False)
    ids: list[int] = [11]
    c1 = cur.chunk({"output_ids": ids, "meta_info": _meta(n=1)})
    ids += [12, 13]  # the engine appends to the list it already handed out
    c2 = cur.chunk({"output_ids": ids, "meta_info": _meta(n=3)})
    ids += [14]
    c3 = cur.chunk({"output_ids": list(ids), "meta_info": _meta({"type": "length", "length": 4}, n=4, cached=2)})
    assert (c1.token_ids, c2.token_ids, c3.token_ids) == ([11], [12, 13], [14])
    assert c1.finish_reason is None and c1.usage is None
    assert c3.finish_reason == "length" and c3.usage == Usage(3, 4, 2)


def test_incremental_stream_passes_deltas() -> None:
    cur = OutputCursor(incremental=True)
    c1 = cur.chunk({"output_ids": [11, 12], "meta_info": _meta(n=2)})
    c2 = cur.chunk({"output_ids": [13], "meta_info": _meta({"type": "stop", "matched": 257}, n=3)})
    assert (c1.token_ids, c2.token_ids) == ([11, 12], [13])
    assert (c2.finish_reason, c2.stop_reason) == ("stop", 257)


def test_logprobs_follow_the_tokens_in_both_modes() -> None:
    lp = [(-0.1, 11, None), (-0.2, 12, None), (-0.3, 13, None)]
    top = [[(-0.1, 11, None), (-2.0, 99, None)], [(-0.2, 12, None)], None]
    cum = OutputCursor(incremental=False)
    cum.chunk({"output_ids": [11], "meta_info": _meta(output_token_logprobs=lp[:1], output_top_logprobs=top[:1])})
    c = cum.chunk({"output_ids": [11, 12, 13], "meta_info": _meta(output_token_logprobs=lp,
                                                                  output_top_logprobs=top)})
    assert c.logprobs == [-0.2, -0.3]
    assert c.top_logprobs == [[TopLogprob(12, -0.2)], []]
    inc = OutputCursor(incremental=True)
    c = inc.chunk({"output_ids": [11, 12], "meta_info": _meta(output_token_logprobs=lp[:2],
                                                              output_top_logprobs=top[:2])})
    assert c.logprobs == [-0.1, -0.2]
    assert c.top_logprobs == [[TopLogprob(11, -0.1), TopLogprob(99, -2.0)], [TopLogprob(12, -0.2)]]


@pytest.mark.parametrize("reason, expect", [
    (None, (None, None)),
    ({"type": "stop", "matched": 2}, ("stop", 2)),
    ({"type": "stop", "matched": "###"}, ("stop", "###")),
    ({"type": "length", "length": 16}, ("length", None)),
    ({"type": "abort", "message": "Abort before prefill", "status_code": None}, ("abort", None)),
    ("length", ("length", None)),
])
def test_finish_reasons(reason: Any, expect: tuple[Any, Any]) -> None:
    assert finish_of(reason) == expect


@pytest.mark.parametrize("status, message, code", [
    (400, "The input (9000 tokens) is longer than the model's context length (4096 tokens).",
     "context_length_exceeded"),
    (400, "bad sampling params", "bad_request"),
    (503, "Request running timeout reached.", "overloaded"),
    (500, "internal", "engine_error"),
])
def test_aborts_with_a_status_are_errors(status: int, message: str, code: str) -> None:
    with pytest.raises(EngineError) as err:
        finish_of({"type": "abort", "message": message, "status_code": status})
    assert err.value.code == code and message in err.value.message


def test_rejections_before_scheduling() -> None:
    e = error_from_exception(ValueError("The input (5000 tokens) is longer than the model's context length"))
    assert e.code == "context_length_exceeded"
    assert error_from_exception(RuntimeError("boom")).code == "engine_error"


def _cfg(mode: str = "null", host: str = "127.0.0.1") -> SglangConfig:
    return SglangConfig(model_path="/m", argv=(), parsed=False, page_size=16, disaggregation_mode=mode, host=host,
                        bootstrap_port=8998)


def test_runtime_config_from_scheduler_state() -> None:
    state = {"page_size": 16, "effective_max_running_requests_per_dp": 512, "max_prefill_tokens": 16384,
             "dp_size": 1, "max_queued_requests": 100}
    rc = runtime_config(_cfg(), state, {"max_total_num_tokens": 100_000})
    assert rc.total_kv_blocks == 6250 and rc.page_size == 16
    assert (rc.max_running_requests, rc.max_batched_tokens, rc.max_waiting_requests, rc.dp_size) == (512, 16384,
                                                                                                      100, 1)
    assert rc.bootstrap_host is None and rc.disaggregation_mode == "null"
    pre = runtime_config(_cfg("prefill", host="10.1.2.3"), state, {"max_total_num_tokens": 1600})
    assert (pre.bootstrap_host, pre.bootstrap_port, pre.total_kv_blocks) == ("10.1.2.3", 8998, 100)


def test_load_sums_dp_ranks_in_blocks() -> None:
    snaps = [SimpleNamespace(num_running_reqs=3, num_waiting_reqs=1, num_used_tokens=320, max_total_num_tokens=1600),
             SimpleNamespace(num_running_reqs=2, num_waiting_reqs=0, num_used_tokens=160, max_total_num_tokens=1600)]
    assert load_from_snapshots(snaps, 16) == EngineLoad(running=5, waiting=1, kv_used_blocks=30, kv_total_blocks=200)
