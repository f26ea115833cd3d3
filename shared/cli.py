"""`shoal`: the command-line entry point. One verb a concern; each verb wires only."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable


def _make_tiny(a: argparse.Namespace) -> int:
    from shared.model.tiny import make_tiny

    print(make_tiny(a.dir, seed=a.seed))
    return 0


def _up(a: argparse.Namespace) -> int:
    from shared.cluster.local import up

    return up(a)


def _down(a: argparse.Namespace) -> int:
    from shared.cluster.local import down

    return down(a)


def _chat(a: argparse.Namespace) -> int:
    from shared.cluster.chat import chat

    return chat(a)


def build_parser() -> argparse.ArgumentParser:
    from shared.cluster.chat import add_chat_args
    from shared.cluster.local import add_up_args

    p = argparse.ArgumentParser(prog="shoal", description="shoal: distributed LLM serving over NATS")
    verbs = p.add_subparsers(dest="verb", required=True)
    model = verbs.add_parser("model", help="model utilities").add_subparsers(dest="model_verb", required=True)
    tiny = model.add_parser("make-tiny", help="make the default tiny model (offline, seeded)")
    tiny.add_argument("dir")
    tiny.add_argument("--seed", type=int, default=0)
    tiny.set_defaults(fn=_make_tiny)
    up = verbs.add_parser("up", help="start a local cluster on loopback")
    add_up_args(up)
    up.set_defaults(fn=_up)
    verbs.add_parser("down", help="stop the local cluster").set_defaults(fn=_down)
    chat = verbs.add_parser("chat", help="stream one chat completion")
    add_chat_args(chat)
    chat.set_defaults(fn=_chat)
    return p


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    fn: Callable[[argparse.Namespace], int] = args.fn
    sys.exit(fn(args))


if __name__ == "__main__":
    main()
