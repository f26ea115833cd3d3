"""Every OpenAI chat/completions request field is implemented, owned by the agents layer, or a 400 naming it."""

from __future__ import annotations

import json

import msgspec
import pytest
from openai.types import completion_create_params
from openai.types.chat import completion_create_params as chat_create_params

from services.frontend.fields import KNOWN, REFUSED, check_fields
from services.frontend.openai_types import ChatCompletionRequest, CompletionRequest
from services.frontend.preprocess import _logit_bias
from shared.errors import BadRequest

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
COMPLETION = {"model": "m", "prompt": "hi"}
OPENAI_FIELDS = [(ChatCompletionRequest, f) for f in chat_create_params.CompletionCreateParamsBase.__annotations__] \
    + [(CompletionRequest, f) for f in completion_create_params.CompletionCreateParamsBase.__annotations__]


def _body(kind: type, **extra: object) -> bytes:
    return json.dumps({**(CHAT if kind is ChatCompletionRequest else COMPLETION), **extra}).encode()


@pytest.mark.parametrize(("kind", "field"), OPENAI_FIELDS, ids=[f"{k.__name__}.{f}" for k, f in OPENAI_FIELDS])
def test_every_openai_field_is_known(kind: type, field: str) -> None:
    assert field in KNOWN[kind]


REFUSALS = [("audio", {"voice": "alloy", "format": "wav"}), ("modalities", ["text", "audio"]),
            ("prediction", {"type": "content", "content": "x"}), ("web_search_options", {}),
            ("store", True), ("metadata", {"k": "v"}), ("service_tier", "flex"), ("moderation", {}),
            ("prompt_cache_options", {}), ("prompt_cache_retention", "24h")]


@pytest.mark.parametrize(("field", "value"), REFUSALS)
def test_chat_fields_shoal_lacks_are_a_400_naming_them(field: str, value: object) -> None:
    with pytest.raises(BadRequest) as e:
        check_fields(_body(ChatCompletionRequest, **{field: value}), ChatCompletionRequest, False)
    assert e.value.param == field


@pytest.mark.parametrize(("field", "value"), [("best_of", 3)])
def test_completion_fields_shoal_lacks_are_a_400_naming_them(field: str, value: object) -> None:
    with pytest.raises(BadRequest) as e:
        check_fields(_body(CompletionRequest, **{field: value}), CompletionRequest, True)
    assert e.value.param == field


@pytest.mark.parametrize(("field", "value"), [("store", False), ("modalities", ["text"]), ("metadata", None),
                                              ("service_tier", "auto"), ("audio", None)])
def test_refusable_fields_asking_for_nothing_pass(field: str, value: object) -> None:
    raw = _body(ChatCompletionRequest, **{field: value})
    assert check_fields(raw, ChatCompletionRequest, False) == raw


def test_refusals_cover_only_fields_outside_the_request_struct() -> None:
    for kind in (ChatCompletionRequest, CompletionRequest):
        implemented = {f.name for f in msgspec.structs.fields(kind)}
        agents = {"tools", "tool_choice", "parallel_tool_calls", "response_format"}
        assert agents <= implemented or kind is CompletionRequest
        assert not (implemented & REFUSED.keys())


def test_unknown_field_is_a_400_naming_it_unless_ignored() -> None:
    raw = _body(CompletionRequest, frobnicate=1)
    with pytest.raises(BadRequest) as e:
        check_fields(raw, CompletionRequest, False)
    assert e.value.param == "frobnicate"
    assert json.loads(check_fields(raw, CompletionRequest, True)) == COMPLETION


@pytest.mark.parametrize("field", ["tools", "tool_choice", "parallel_tool_calls", "response_format"])
def test_agents_layer_fields_are_request_fields(field: str) -> None:
    raw = _body(ChatCompletionRequest, **{field: None})
    assert check_fields(raw, ChatCompletionRequest, False) == raw


def test_completion_only_and_chat_only_fields_stay_apart() -> None:
    with pytest.raises(BadRequest) as e:
        check_fields(_body(CompletionRequest, tools=[]), CompletionRequest, False)
    assert e.value.param == "tools"
    with pytest.raises(BadRequest):
        check_fields(_body(ChatCompletionRequest, echo=True), ChatCompletionRequest, False)


def test_logit_bias_keys_must_be_token_ids_in_the_vocabulary() -> None:
    assert _logit_bias({"5": 1.5}, 10) == {5: 1.5}
    for bad in ({"x": 1.0}, {"10": 1.0}, {"-1": 1.0}):
        with pytest.raises(BadRequest) as e:
            _logit_bias(bad, 10)
        assert e.value.param == "logit_bias"


def test_logit_bias_values_are_limited_to_openai_range() -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(_body(CompletionRequest, logit_bias={"5": 101}), type=CompletionRequest)
