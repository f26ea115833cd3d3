"""The frontend's flags for run-time LoRA adapter management (off by default; an admin key of its own)."""

from __future__ import annotations

import argparse
import os

import msgspec

from shared.config.flags import FlagGroup, flag

ADMIN_KEY_ENV = "SHOAL_ADMIN_API_KEY"


class LoraAdminOptions(msgspec.Struct, frozen=True):
    runtime_updates: bool = False
    admin_api_key: str | None = None
    admin_api_key_file: str | None = None

    def __repr__(self) -> str:  # never print the key
        return f"LoraAdminOptions(runtime_updates={self.runtime_updates})"


LORA_ADMIN_FLAGS = FlagGroup(
    "LoRA adapters at run time", LoraAdminOptions,
    flag("runtime_updates", "--enable-lora-runtime-updates",
         help="serve /v1/load_lora_adapter and /v1/unload_lora_adapter (admin key only; default: off)"),
    flag("admin_api_key", "--admin-api-key",
         help=f"the key of the admin routes, not the inference key (env {ADMIN_KEY_ENV}; prefer the file)"),
    flag("admin_api_key_file", "--admin-api-key-file", help="a file holding the admin key"),
)


def add_lora_admin_args(p: argparse.ArgumentParser) -> None:
    LORA_ADMIN_FLAGS.add_to(p, defaults={"admin_api_key": os.environ.get(ADMIN_KEY_ENV) or None})


def lora_admin_options(p: argparse.ArgumentParser, ns: argparse.Namespace, api_key: str | None) -> LoraAdminOptions:
    """The options, the key read from its file; exits with a usage error on an unsafe combination."""
    opts = LORA_ADMIN_FLAGS.build(ns)
    key = opts.admin_api_key
    if opts.admin_api_key_file:
        try:
            with open(opts.admin_api_key_file, encoding="utf-8") as f:
                key = f.read().strip()
        except OSError as e:
            p.error(f"--admin-api-key-file: {e.strerror}")
    if opts.runtime_updates and not key:
        p.error("--enable-lora-runtime-updates needs an admin key (--admin-api-key-file, --admin-api-key or "
                f"{ADMIN_KEY_ENV})")
    if key and key == api_key:
        p.error("the admin key must differ from the inference key (--api-key)")
    return msgspec.structs.replace(opts, admin_api_key=key or None, admin_api_key_file=None)
