"""Tokenizer: same ids and text as transformers, chat templates as transformers renders them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from shared.tokenizer import TemplateError, Tokenizer

ROOT = Path(__file__).resolve().parents[2]
TEXTS = ["hello world", "  leading and trailing  ", "héllo wörld", "你好\uff0c世界", "wave 👋🏽 family 👨‍👩‍👧",
         "tabs\tand\nnewlines\r\n", "<|user|>special inside<|eos|>", ""]
CONVERSATION = [
    {"role": "system", "content": "be brief"},
    {"role": "user", "content": "hi 你好"},
    {"role": "assistant", "content": "hello"},
    {"role": "user", "content": "again 👋"},
]


@pytest.fixture(scope="module")
def tok(tiny_model: Path) -> Tokenizer:
    return Tokenizer.from_dir(tiny_model)


@pytest.fixture(scope="module")
def hf(tiny_model: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


def _with(tiny_model: Path, **changes: bytes) -> Tokenizer:
    files = Tokenizer.artifact_files(tiny_model)
    files.update(changes)
    return Tokenizer.from_files({k: v for k, v in files.items() if v})


@pytest.mark.parametrize("text", TEXTS)
def test_encode_and_decode_match_transformers(tok: Tokenizer, hf: Any, text: str) -> None:
    ids = tok.encode(text)
    assert ids == hf.encode(text, add_special_tokens=False)
    assert tok.decode(ids) == hf.decode(ids, skip_special_tokens=True)
    assert tok.decode(ids, skip_special_tokens=False) == hf.decode(ids, skip_special_tokens=False)
    assert tok.decode(ids, skip_special_tokens=False) == text


def test_every_utf8_byte_is_one_token_and_specials_follow(tok: Tokenizer) -> None:
    assert tok.encode("a你") == [ord("a"), 0xE4, 0xBD, 0xA0]
    assert tok.vocab_size == 261
    assert tok.bos_token_id == 256
    assert tok.eos_token_ids == {257}
    assert tok.token_to_id("<|assistant|>") == 259
    assert tok.decode([256, ord("h"), ord("i"), 257]) == "hi"


def test_eos_may_be_a_list_in_generation_config(tiny_model: Path) -> None:
    tok = _with(tiny_model, **{"generation_config.json": json.dumps({"eos_token_id": [257, 258]}).encode()})
    assert tok.eos_token_ids == {257, 258}


def test_add_bos_follows_tokenizer_config(tiny_model: Path) -> None:
    config = json.loads(Tokenizer.artifact_files(tiny_model)["tokenizer_config.json"])
    tok = _with(tiny_model, **{"tokenizer_config.json": json.dumps({**config, "add_bos_token": True}).encode()})
    assert tok.encode("hi", add_special_tokens=True) == [256, ord("h"), ord("i")]
    assert tok.encode("hi") == [ord("h"), ord("i")]
    plain = Tokenizer.from_dir(tiny_model)
    assert plain.encode("hi", add_special_tokens=True) == [ord("h"), ord("i")]


@pytest.mark.parametrize("add_generation_prompt", [True, False])
def test_chat_template_matches_transformers(tok: Tokenizer, hf: Any, add_generation_prompt: bool) -> None:
    ours = tok.apply_chat_template(CONVERSATION, add_generation_prompt=add_generation_prompt)
    theirs = hf.apply_chat_template(CONVERSATION, tokenize=False, add_generation_prompt=add_generation_prompt)
    assert ours == theirs
    assert ours.startswith("<|system|>be brief<|user|>hi 你好")
    assert ours.endswith("<|assistant|>") == add_generation_prompt


def test_content_parts_are_joined(tok: Tokenizer) -> None:
    parts = [{"type": "text", "text": "one "}, {"type": "image_url", "image_url": {"url": "x"}},
             {"type": "text", "text": "two"}]
    text = tok.apply_chat_template([{"role": "user", "content": parts}])
    assert text == "<|user|>one two<|assistant|>"


def test_from_files_equals_from_dir(tiny_model: Path, tok: Tokenizer) -> None:
    files = Tokenizer.artifact_files(tiny_model)
    assert {"tokenizer.json", "tokenizer_config.json", "generation_config.json", "chat_template.jinja"} <= set(files)
    assert "model.safetensors" not in files
    remote = Tokenizer.from_files(files)
    assert remote.encode("你好 👋") == tok.encode("你好 👋")
    assert remote.eos_token_ids == tok.eos_token_ids
    assert remote.apply_chat_template(CONVERSATION) == tok.apply_chat_template(CONVERSATION)


def test_missing_tokenizer_json_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"tokenizer\.json"):
        Tokenizer.from_files({"tokenizer_config.json": b"{}"})
    with pytest.raises(FileNotFoundError, match=r"tokenizer\.json"):
        Tokenizer.artifact_files(tmp_path)


def test_template_from_tokenizer_config_when_no_jinja_file(tiny_model: Path) -> None:
    config = json.loads(Tokenizer.artifact_files(tiny_model)["tokenizer_config.json"])
    config["chat_template"] = "{% for m in messages %}[{{ m['content'] }}]{% endfor %}"
    tok = _with(tiny_model, **{"tokenizer_config.json": json.dumps(config).encode(), "chat_template.jinja": b""})
    assert tok.apply_chat_template([{"role": "user", "content": "x"}]) == "[x]"


def test_custom_template_overrides_the_model_and_sees_special_tokens(tiny_model: Path) -> None:
    custom = "{{ bos_token }}{% for m in messages %}{{ m['role'] }}={{ m['content'] }};{% endfor %}{{ eos_token }}"
    tok = Tokenizer.from_dir(tiny_model, custom_chat_template=custom)
    assert tok.apply_chat_template([{"role": "user", "content": "hi"}]) == "<|bos|>user=hi;<|eos|>"


def test_template_raise_exception_becomes_template_error(tiny_model: Path) -> None:
    custom = ("{% if messages[0]['role'] != 'user' %}{{ raise_exception('first message must be from the user') }}"
              "{% endif %}ok")
    tok = Tokenizer.from_dir(tiny_model, custom_chat_template=custom)
    assert tok.apply_chat_template([{"role": "user", "content": "x"}]) == "ok"
    with pytest.raises(TemplateError, match="first message must be from the user"):
        tok.apply_chat_template([{"role": "assistant", "content": "x"}])


def test_template_dialect_tools_tojson_loopcontrols_and_kwargs(tiny_model: Path) -> None:
    custom = ("{% for t in tools %}{{ t | tojson }}{% endfor %}"
              "{% for m in messages %}{% if loop.index > 1 %}{% break %}{% endif %}{{ m['content'] }}{% endfor %}"
              "{% generation %}/{{ mode }}{% endgeneration %}")
    tok = Tokenizer.from_dir(tiny_model, custom_chat_template=custom)
    tools = [{"name": "f", "description": "<b>&'"}]
    text = tok.apply_chat_template([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}],
                                   tools=tools, mode="fast")
    assert text == '{"name": "f", "description": "<b>&\'"}a/fast'


def test_template_cannot_reach_python_internals(tiny_model: Path) -> None:
    custom = "{{ messages.__class__.__mro__[1].__subclasses__() }}"
    tok = Tokenizer.from_dir(tiny_model, custom_chat_template=custom)
    with pytest.raises(TemplateError):
        tok.apply_chat_template([{"role": "user", "content": "x"}])


def test_broken_or_missing_template_is_a_template_error(tiny_model: Path) -> None:
    with pytest.raises(TemplateError, match="does not compile"):
        Tokenizer.from_dir(tiny_model, custom_chat_template="{% for %}").apply_chat_template([])
    config = json.loads(Tokenizer.artifact_files(tiny_model)["tokenizer_config.json"])
    del config["chat_template"]
    bare = _with(tiny_model, **{"tokenizer_config.json": json.dumps(config).encode(), "chat_template.jinja": b""})
    with pytest.raises(TemplateError, match="no chat template"):
        bare.apply_chat_template([{"role": "user", "content": "x"}])


def test_runtime_path_does_not_import_transformers(tiny_model: Path) -> None:
    code = ("import sys; from shared.tokenizer import IncrementalDetokenizer, Tokenizer; "
            f"t = Tokenizer.from_dir({str(tiny_model)!r}); ids = t.encode('hé'); "
            "d = IncrementalDetokenizer(t); assert d.add(ids) + d.flush() == 'hé'; "
            "t.apply_chat_template([{'role': 'user', 'content': 'x'}]); "
            "print('transformers' in sys.modules, 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "False"]


def test_tokenizing_a_long_prompt_in_a_thread_leaves_the_event_loop_running(tok: Tokenizer) -> None:
    """The frontend tokenizes long prompts in a thread; that only helps if the tokenizer lets go of the GIL
    (`tokenizers`' plain `encode` holds it for the whole call, so the loop stood still meanwhile)."""
    import asyncio
    import time

    text = "the quick brown fox jumps over the lazy dog, " * 12_000

    async def scenario() -> tuple[float, int]:
        ticks = 0
        done = False

        async def ticker() -> None:
            nonlocal ticks
            while not done:
                await asyncio.sleep(0.001)
                ticks += 1

        task = asyncio.create_task(ticker())
        await asyncio.sleep(0.01)
        t0, before = time.monotonic(), ticks
        ids = await asyncio.to_thread(tok.encode, text)
        took, during = time.monotonic() - t0, ticks - before
        done = True
        await task
        assert len(ids) >= len(text) // 8
        return took, during

    took, during = asyncio.run(scenario())
    assert took > 0.05, f"the text is too short to tell ({took * 1000:.0f} ms)"
    # the loop ticks about once a millisecond when free; it stood still (0-2 ticks) while the GIL was held
    assert during >= max(10, int(took * 1000) // 10), f"{during} loop ticks in {took * 1000:.0f} ms of tokenizing"
