"""The parser flags, SGLang's names, shared by workers (published in the model card) and the frontend (override)."""

from __future__ import annotations

import argparse

from shared.parsers.reasoning import REASONING_PARSERS
from shared.parsers.tool_formats import TOOL_PARSERS


def add_parser_args(group: argparse._ArgumentGroup, *, where: str) -> None:
    """`--tool-call-parser NAME` and `--reasoning-parser NAME`; `where` says who acts on them (for --help)."""
    group.add_argument("--tool-call-parser", choices=["auto", *sorted(TOOL_PARSERS)], default=None,
                       help=f"tool-call format of the model's output ({where}); auto (the default when the "
                            "model has a chat template): read off the chat template and special tokens")
    group.add_argument("--reasoning-parser", choices=["auto", *REASONING_PARSERS], default=None,
                       help=f"reasoning format of the model's output ({where}); auto (the default when the model "
                            "has a chat template): read off the chat template and special tokens")
