"""The model a service serves: `--model-path` (env SHOAL_MODEL) and `--served-model-name`, defined once."""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterable

import msgspec

from shared.config.flags import FlagGroup, flag


class ModelOptions(msgspec.Struct, frozen=True):
    model_path: str = ""
    served_model_name: str = ""  # resolved by `model_options`: the directory's name when not given


MODEL_FLAGS = FlagGroup(
    "model", ModelOptions,
    flag("model_path", "--model-path", "--model", help="model directory, Hugging Face layout (env SHOAL_MODEL)"),
    flag("served_model_name", "--served-model-name", help="name clients use (default: the directory name)"),
)


def add_model_args(parser: argparse.ArgumentParser, skip: Iterable[str] = ()) -> None:
    MODEL_FLAGS.add_to(parser, skip, defaults={"model_path": os.environ.get("SHOAL_MODEL", "")})


def model_options(parser: argparse.ArgumentParser, ns: argparse.Namespace, make_hint: str) -> ModelOptions:
    """The parsed model, its name resolved; exits with `make_hint` (how to make one) when no path is given."""
    opts = MODEL_FLAGS.build(ns)
    if not opts.model_path:
        parser.error(f"--model-path is required (make one with: {make_hint})")
    name = opts.served_model_name or os.path.basename(os.path.normpath(opts.model_path))
    return msgspec.structs.replace(opts, served_model_name=name)
