"""Test pictures: seeded random RGB images as PNG bytes."""

from __future__ import annotations

import io

import torch
from PIL import Image


def png(seed: int, size: tuple[int, int]) -> bytes:
    """A `size` (width, height) picture of seeded random pixels, PNG-encoded."""
    g = torch.Generator().manual_seed(seed)
    raw = torch.randint(0, 256, (size[1], size[0], 3), generator=g, dtype=torch.uint8)
    buf = io.BytesIO()
    Image.fromarray(raw.numpy()).save(buf, "PNG")
    return buf.getvalue()
