"""The model a service serves: `--model-path` (env SHOAL_MODEL), `--revision` and `--served-model-name`, defined once.

`--model-path` is a local directory or a Hugging Face id (`org/name`), resolved once here, at start-up,
through huggingface_hub's cache (shared.model.hub)."""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterable

import msgspec

from shared.config.flags import FlagGroup, flag
from shared.model.hub import ModelNotFoundError, resolve_model, served_name


class ModelOptions(msgspec.Struct, frozen=True):
    model_path: str = ""  # resolved by `model_options`: the local directory (a hub id's cache snapshot)
    revision: str | None = None  # hub ids: branch, tag or commit
    served_model_name: str = ""  # resolved by `model_options`: the hub id or the directory's name when not given


MODEL_FLAGS = FlagGroup(
    "model", ModelOptions,
    flag("model_path", "--model-path", "--model",
         help="model directory (Hugging Face layout) or a Hugging Face id org/name (env SHOAL_MODEL)"),
    flag("revision", "--revision", help="hub ids: branch, tag or commit (default: main)"),
    flag("served_model_name", "--served-model-name",
         help="name clients use (default: the hub id or the directory name)"),
)


def add_model_args(parser: argparse.ArgumentParser, skip: Iterable[str] = ()) -> None:
    MODEL_FLAGS.add_to(parser, skip, defaults={"model_path": os.environ.get("SHOAL_MODEL", "")})


def model_options(parser: argparse.ArgumentParser, ns: argparse.Namespace, make_hint: str) -> ModelOptions:
    """The parsed model, its path resolved to a local directory and its name resolved; exits with `make_hint`
    (how to make one) when no path is given, naming the hub cache when a hub id (or revision) is missing."""
    opts = MODEL_FLAGS.build(ns)
    if not opts.model_path:
        parser.error(f"--model-path is required (make one with: {make_hint})")
    try:
        path = resolve_model(opts.model_path, opts.revision)
    except ModelNotFoundError as e:
        parser.error(str(e))
    return msgspec.structs.replace(opts, model_path=path,
                                   served_model_name=opts.served_model_name or served_name(opts.model_path))
