"""`shoal`: the command-line entry point. One verb a concern; each verb only wires.

To add a verb, write `_add_<verb>(verbs)` that adds its subparser and sets
`fn` (Namespace -> exit code), and list it in VERBS. Keep imports of heavy
modules inside the `fn`, so `shoal --help` stays fast.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import TypeAlias

Verbs: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
Run: TypeAlias = Callable[[argparse.Namespace], int]


def _make_tiny(a: argparse.Namespace) -> int:
    from shared.model.tiny import make_tiny

    if getattr(a, "cross_encoder", False):
        from shared.model.tiny_cross_encoder import make_tiny_cross_encoder

        print(make_tiny_cross_encoder(a.dir, seed=a.seed))
        return 0
    if getattr(a, "vision", False):
        from shared.model.tiny_vlm import make_tiny_vlm

        try:
            print(make_tiny_vlm(a.dir, seed=a.seed))
        except FileExistsError as e:
            print(f"shoal: {e}", file=sys.stderr)
            return 1
        return 0
    try:
        print(make_tiny(a.dir, seed=a.seed, vocab_extra=a.vocab_extra, diffusion=a.diffusion))
    except FileExistsError as e:
        print(f"shoal: {e}", file=sys.stderr)
        return 1
    return 0


def _add_model(verbs: Verbs) -> None:
    model = verbs.add_parser("model", help="model utilities").add_subparsers(dest="model_verb", required=True)
    tiny = model.add_parser("make-tiny", help="make the default tiny model (offline, seeded, deterministic)")
    tiny.add_argument("dir", help="output directory (an earlier tiny model there is replaced)")
    tiny.add_argument("--seed", type=int, default=0)
    tiny.add_argument("--vocab-extra", type=int, default=0, help="extra reserved special tokens")
    tiny.add_argument("--diffusion", action="store_true",
                      help="a masked-diffusion LM: a <|mask|> token and a shoal_diffusion section in config.json "
                           "(serve it with python -m services.diffusion)")
    tiny.add_argument("--vision", action="store_true",
                      help="a tiny vision-language model (Llava: tiny CLIP tower + the tiny Llama, an <image> token)")
    tiny.add_argument("--cross-encoder", action="store_true",
                      help="a tiny BERT cross-encoder (BertForSequenceClassification, one label, WordPiece "
                           "tokenizer): serve it with python -m services.score for /v1/rerank and /v1/score")
    tiny.set_defaults(fn=_make_tiny)


def _up(a: argparse.Namespace) -> int:
    from shared.cluster.local import up

    return up(a)


def _down(a: argparse.Namespace) -> int:
    from shared.cluster.local import down

    return down(a)


def _add_cluster(verbs: Verbs) -> None:
    from shared.cluster.local import add_up_args

    up = verbs.add_parser("up", help="start a local cluster on loopback")
    add_up_args(up)
    up.set_defaults(fn=_up)
    verbs.add_parser("down", help="stop the local cluster").set_defaults(fn=_down)


def _chat(a: argparse.Namespace) -> int:
    from shared.cluster.chat import chat

    return chat(a)


def _add_chat(verbs: Verbs) -> None:
    from shared.cluster.chat import add_chat_args

    chat = verbs.add_parser("chat", help="stream one chat completion")
    add_chat_args(chat)
    chat.set_defaults(fn=_chat)


def _watch(a: argparse.Namespace) -> int:
    from shared.cluster.watch import watch

    return watch(a)


def _add_watch(verbs: Verbs) -> None:
    from shared.cluster.watch import add_watch_args

    w = verbs.add_parser("watch", help="print a subject's traffic as JSON lines")
    add_watch_args(w)
    w.set_defaults(fn=_watch)


def _setup(a: argparse.Namespace) -> int:
    from shared.runtime.provision import setup

    return setup(a)


def _add_setup(verbs: Verbs) -> None:
    from shared.runtime.provision import add_setup_args

    s = verbs.add_parser("setup", help="create the namespace's JetStream buckets and streams (the NATS setup user)")
    add_setup_args(s)
    s.set_defaults(fn=_setup)


# add new verbs here
VERBS: list[Callable[[Verbs], None]] = [_add_model, _add_cluster, _add_chat, _add_watch, _add_setup]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="shoal", description="shoal: distributed LLM serving over NATS")
    verbs = p.add_subparsers(dest="verb", required=True)
    for add in VERBS:
        add(verbs)
    return p


def main(argv: list[str] | None = None) -> None:
    from shared.config.yaml_config import expand_config_argv

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and not argv[0].startswith("-"):  # a verb's --config FILE --config-key KEY: its flags from the YAML
        argv = [argv[0], *expand_config_argv(argv[1:])]
    args = build_parser().parse_args(argv)
    fn: Run = args.fn
    sys.exit(fn(args))


if __name__ == "__main__":
    main()
