"""A Hugging Face tokenizer (fast `tokenizers` library) with its chat template.

Built from a model directory, or from the files a worker uploaded to the
artifacts store, so a frontend on another host needs no copy of the model.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import Tokenizer as FastTokenizer

ARTIFACT_FILES = ("tokenizer.json", "tokenizer_config.json", "generation_config.json", "config.json",
                  "chat_template.jinja", "special_tokens_map.json")


class TemplateError(ValueError):
    """The chat template refused the conversation (its raise_exception)."""


def _raise(message: str) -> None:
    raise TemplateError(message)


@lru_cache(maxsize=16)
def _compile(source: str) -> jinja2.Template:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = _raise
    env.filters["tojson"] = lambda v, indent=None: json.dumps(v, ensure_ascii=False, indent=indent)
    return env.from_string(source)


def _token_text(value: Any) -> str | None:
    if isinstance(value, dict):
        return value.get("content")
    return value


class Tokenizer:
    def __init__(self, fast: FastTokenizer, config: dict[str, Any], generation: dict[str, Any],
                 model_config: dict[str, Any], chat_template: str | None) -> None:
        self._fast = fast
        self.bos_token = _token_text(config.get("bos_token"))
        self.eos_token = _token_text(config.get("eos_token"))
        self.add_bos = bool(config.get("add_bos_token", False))
        self.chat_template = chat_template
        self.vocab_size = fast.get_vocab_size(with_added_tokens=True)
        self.eos_token_ids = self._eos_ids(generation, model_config)
        self.bos_token_id = fast.token_to_id(self.bos_token) if self.bos_token else None

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def from_dir(cls, path: str | Path, custom_chat_template: str | None = None) -> Tokenizer:
        return cls.from_files(cls.artifact_files(path), custom_chat_template)

    @classmethod
    def from_files(cls, files: dict[str, bytes], custom_chat_template: str | None = None) -> Tokenizer:
        if "tokenizer.json" not in files:
            raise FileNotFoundError("tokenizer.json is missing (only fast tokenizers are supported)")
        fast = FastTokenizer.from_str(files["tokenizer.json"].decode())

        def load(name: str) -> dict[str, Any]:
            return json.loads(files[name]) if name in files else {}

        config = load("tokenizer_config.json")
        template = custom_chat_template or _template_of(config, files.get("chat_template.jinja"))
        return cls(fast, config, load("generation_config.json"), load("config.json"), template)

    @staticmethod
    def artifact_files(path: str | Path) -> dict[str, bytes]:
        root = Path(path)
        if not root.is_dir():
            raise FileNotFoundError(f"model directory {root} does not exist")
        return {name: (root / name).read_bytes() for name in ARTIFACT_FILES if (root / name).exists()}

    # ---- encoding -----------------------------------------------------------------------
    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        ids = self._fast.encode(text, add_special_tokens=add_special_tokens).ids
        if add_special_tokens and self.add_bos and self.bos_token_id is not None and ids[:1] != [self.bos_token_id]:
            ids.insert(0, self.bos_token_id)
        return ids

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return self._fast.decode(ids, skip_special_tokens=skip_special_tokens)

    def id_to_token(self, token_id: int) -> str | None:
        return self._fast.id_to_token(token_id)

    # ---- chat -----------------------------------------------------------------------------
    def apply_chat_template(self, messages: list[dict[str, Any]], add_generation_prompt: bool = True,
                            tools: list[dict[str, Any]] | None = None, **kwargs: Any) -> str:
        if not self.chat_template:
            raise TemplateError("this model has no chat template; use /v1/completions or "
                                "--custom-jinja-template")
        msgs = [_flatten(m) for m in messages]
        return _compile(self.chat_template).render(
            messages=msgs, add_generation_prompt=add_generation_prompt, tools=tools,
            bos_token=self.bos_token or "", eos_token=self.eos_token or "", **kwargs)

    def _eos_ids(self, generation: dict[str, Any], model_config: dict[str, Any]) -> set[int]:
        ids: set[int] = set()
        for source in (generation.get("eos_token_id"), model_config.get("eos_token_id")):
            if isinstance(source, int):
                ids.add(source)
            elif isinstance(source, list):
                ids.update(int(i) for i in source)
        if self.eos_token and (tid := self._fast.token_to_id(self.eos_token)) is not None:
            ids.add(tid)
        return ids


def _template_of(config: dict[str, Any], jinja_file: bytes | None) -> str | None:
    if jinja_file:
        return jinja_file.decode()
    tpl = config.get("chat_template")
    if isinstance(tpl, list):  # named templates: take "default"
        named = {t.get("name"): t.get("template") for t in tpl}
        return named.get("default") or next(iter(named.values()), None)
    return tpl


def _flatten(message: dict[str, Any]) -> dict[str, Any]:
    """OpenAI content parts -> one string, as most chat templates expect."""
    content = message.get("content")
    if isinstance(content, list):
        message = {**message, "content": "".join(p.get("text") or "" for p in content if p.get("type") == "text")}
    elif content is None:
        message = {**message, "content": ""}
    return message
