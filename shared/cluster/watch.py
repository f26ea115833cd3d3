"""`shoal watch SUBJECT`: print any shoal subject's traffic as JSON lines (the wire is msgpack)."""

from __future__ import annotations

import argparse
import asyncio
import json

import msgspec

from shared.config.args import NatsOptions


def add_watch_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("subject", help="e.g. 'shoal.shoal.kv.>' or 'shoal.shoal.load.>' (wildcards allowed)")
    p.add_argument("--nats-url", default="nats://127.0.0.1:4222")
    p.add_argument("--count", type=int, default=0, help="stop after this many messages (0: never)")


def _plain(obj: object) -> object:
    if isinstance(obj, bytes | bytearray):  # frames carry items as nested msgpack
        try:
            return _plain(msgspec.msgpack.decode(obj))
        except msgspec.DecodeError:
            return obj.hex()
    if isinstance(obj, list):
        return [_plain(x) for x in obj]
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    return obj


def decode_message(data: bytes) -> object:
    try:
        return _plain(msgspec.msgpack.decode(data))
    except msgspec.DecodeError:
        return data.decode(errors="replace")


async def _watch(a: argparse.Namespace) -> int:
    import nats

    nc = await nats.connect(servers=NatsOptions(url=a.nats_url).urls)
    sub = await nc.subscribe(a.subject)
    n = 0
    try:
        async for msg in sub.messages:
            print(json.dumps({"subject": msg.subject, "data": decode_message(msg.data)}, default=str), flush=True)
            n += 1
            if a.count and n >= a.count:
                break
    finally:
        await nc.close()
    return 0


def watch(a: argparse.Namespace) -> int:
    try:
        return asyncio.run(_watch(a))
    except KeyboardInterrupt:
        return 0
