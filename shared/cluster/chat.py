"""`shoal chat TEXT`: stream one chat completion from a running frontend to the terminal."""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request


def add_chat_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("text")
    p.add_argument("--url", default="http://127.0.0.1:8000")
    p.add_argument("--model", default=None, help="default: the first model the frontend lists")
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--temperature", type=float, default=0.0)


def chat(a: argparse.Namespace) -> int:
    model = a.model or _first_model(a.url)
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": a.text}], "stream": True,
                       "max_tokens": a.max_tokens, "temperature": a.temperature,
                       "stream_options": {"include_usage": True}}).encode()
    req = urllib.request.Request(a.url + "/v1/chat/completions", body, {"Content-Type": "application/json"})
    print(f"> {a.text}\n< ", end="", flush=True)
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            for raw in r:
                line = raw.decode().strip()
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                data = json.loads(line[6:])
                for ch in data.get("choices", []):
                    sys.stdout.write(ch["delta"].get("content") or "")
                    sys.stdout.flush()
                if data.get("usage"):
                    print(f"\n({data['usage']['completion_tokens']} tokens streamed from model {model})")
    except urllib.error.HTTPError as e:
        print(f"\nerror {e.code}: {e.read().decode()}")
        return 1
    return 0


def _first_model(url: str) -> str:
    with urllib.request.urlopen(url + "/v1/models", timeout=10) as r:
        return json.loads(r.read())["data"][0]["id"]
