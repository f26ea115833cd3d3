"""A Hugging Face tokenizer (the fast `tokenizers` library, no transformers) with its chat template.

Built from a model directory, or from the files a worker uploaded to the
artifacts store, so a frontend on another host needs no copy of the model.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer as FastTokenizer

from shared.tokenizer.chat import TemplateError, render_chat

ARTIFACT_FILES = ("tokenizer.json", "tokenizer_config.json", "generation_config.json", "config.json",
                  "chat_template.jinja", "special_tokens_map.json")


def _token_text(value: Any) -> str | None:
    """A special token as configs write it: a string, or an AddedToken dict with `content`."""
    if isinstance(value, dict):
        return value.get("content")
    return value if isinstance(value, str) else None


def _ids(value: Any) -> set[int]:
    if isinstance(value, int):
        return {value}
    if isinstance(value, list):
        return {int(i) for i in value}
    return set()


class Tokenizer:
    def __init__(self, fast: FastTokenizer, config: dict[str, Any], *, generation: dict[str, Any] | None = None,
                 model_config: dict[str, Any] | None = None, special_map: dict[str, Any] | None = None,
                 chat_template: str | None = None) -> None:
        self._fast = fast
        # both release the GIL; encode_batch_fast (tokenizers >= 0.21) also skips computing offsets
        self._encode_batch = getattr(fast, "encode_batch_fast", fast.encode_batch)
        special_map = special_map or {}
        self.bos_token = _token_text(config.get("bos_token", special_map.get("bos_token")))
        self.eos_token = _token_text(config.get("eos_token", special_map.get("eos_token")))
        self.add_bos = bool(config.get("add_bos_token", False))
        self.chat_template = chat_template
        self.vocab_size: int = fast.get_vocab_size(with_added_tokens=True)
        self.special_ids = frozenset(i for i, t in fast.get_added_tokens_decoder().items() if t.special)
        self.bos_token_id = fast.token_to_id(self.bos_token) if self.bos_token else None
        self.eos_token_ids = self._eos_ids(generation or {}, model_config or {})

    @property
    def backend(self) -> FastTokenizer:
        """The `tokenizers` object itself (for libraries that read the vocabulary, e.g. xgrammar)."""
        return self._fast

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def from_dir(cls, path: str | Path, custom_chat_template: str | None = None) -> Tokenizer:
        return cls.from_files(cls.artifact_files(path), custom_chat_template)

    @classmethod
    def from_files(cls, files: dict[str, bytes], custom_chat_template: str | None = None) -> Tokenizer:
        """From the bytes of `artifact_files` (e.g. fetched from the object store)."""
        if "tokenizer.json" not in files:
            raise FileNotFoundError("tokenizer.json is missing (only fast tokenizers are supported)")
        fast = FastTokenizer.from_str(files["tokenizer.json"].decode())
        fast.no_padding()  # a tokenizer.json may pad or truncate every text (BERT's to 128): ids are ids
        fast.no_truncation()

        def load(name: str) -> dict[str, Any]:
            return json.loads(files[name]) if name in files else {}

        config = load("tokenizer_config.json")
        template = custom_chat_template or _template_of(config, files.get("chat_template.jinja"))
        return cls(fast, config, generation=load("generation_config.json"), model_config=load("config.json"),
                   special_map=load("special_tokens_map.json"), chat_template=template)

    @staticmethod
    def artifact_files(path: str | Path) -> dict[str, bytes]:
        """The files a tokenizer is built from, by name, as found in a model directory."""
        root = Path(path)
        if not (root / "tokenizer.json").is_file():
            raise FileNotFoundError(f"{root} has no tokenizer.json")
        return {name: (root / name).read_bytes() for name in ARTIFACT_FILES if (root / name).is_file()}

    # ---- encoding -----------------------------------------------------------------------
    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return self.encode_batch([text], add_special_tokens)[0]

    def encode_batch(self, texts: list[str], add_special_tokens: bool = False) -> list[list[int]]:
        """Token ids of each text. `encode_batch_fast` releases the GIL while it works (`encode` holds it:
        a long prompt tokenized in a thread would still stall the event loop) and skips offsets."""
        encodings = self._encode_batch(texts, add_special_tokens=add_special_tokens)
        out: list[list[int]] = [e.ids for e in encodings]
        bos = self.bos_token_id
        if add_special_tokens and self.add_bos and bos is not None:
            for ids in out:
                if ids[:1] != [bos]:
                    ids.insert(0, bos)
        return out

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return self._fast.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def id_to_token(self, token_id: int) -> str | None:
        return self._fast.id_to_token(token_id)

    def token_to_id(self, token: str) -> int | None:
        return self._fast.token_to_id(token)

    # ---- chat -----------------------------------------------------------------------------
    def apply_chat_template(self, messages: list[dict[str, Any]], add_generation_prompt: bool = True,
                            tools: list[dict[str, Any]] | None = None, **kwargs: Any) -> str:
        """The prompt text for an OpenAI-style conversation; raises TemplateError when it cannot be made."""
        if not self.chat_template:
            raise TemplateError("this model has no chat template; use /v1/completions or --custom-jinja-template")
        specials = {"bos_token": self.bos_token or "", "eos_token": self.eos_token or ""}
        return render_chat(self.chat_template, messages, add_generation_prompt=add_generation_prompt,
                           tools=tools, specials=specials, **kwargs)

    def _eos_ids(self, generation: dict[str, Any], model_config: dict[str, Any]) -> set[int]:
        ids = _ids(generation.get("eos_token_id")) or _ids(model_config.get("eos_token_id"))
        if self.eos_token and (tid := self._fast.token_to_id(self.eos_token)) is not None:
            ids.add(tid)
        return ids


def _template_of(config: dict[str, Any], jinja_file: bytes | None) -> str | None:
    """chat_template.jinja wins over tokenizer_config.json's `chat_template`, as in transformers."""
    if jinja_file:
        return jinja_file.decode()
    tpl = config.get("chat_template")
    if isinstance(tpl, list):  # named templates: take "default"
        named = {t.get("name"): t.get("template") for t in tpl}
        return named.get("default") or next(iter(named.values()), None)
    return tpl
