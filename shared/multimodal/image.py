"""Image preprocessing as CLIP's image processor does it, with PIL and torch (no torchvision).

Convert to RGB, resize the shortest edge (bicubic), centre-crop, rescale to
[0, 1], normalise by mean and std. Settings come from the model directory's
`preprocessor_config.json`.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from shared.multimodal.fetch import bad_image

MAX_PIXELS = 64 << 20  # refuse decompression bombs


@dataclass(frozen=True)
class ImageSpec:
    shortest_edge: int = 336
    crop_height: int = 336
    crop_width: int = 336
    mean: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
    std: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)
    resample: int = 3  # PIL.Image.BICUBIC
    rescale_factor: float = 1 / 255

    @classmethod
    def from_dir(cls, path: str | Path) -> ImageSpec:
        f = Path(path) / "preprocessor_config.json"
        if not f.is_file():
            return cls()
        c = json.loads(f.read_text())
        size, crop = c.get("size", {}), c.get("crop_size", {})
        edge = size.get("shortest_edge") or size.get("height") or cls.shortest_edge
        return cls(int(edge), int(crop.get("height", edge)), int(crop.get("width", edge)),
                   tuple(c.get("image_mean", cls.mean)), tuple(c.get("image_std", cls.std)),  # type: ignore[arg-type]
                   int(c.get("resample", 3)), float(c.get("rescale_factor", 1 / 255)))


def preprocess(data: bytes, spec: ImageSpec) -> torch.Tensor:
    """`[3, crop_height, crop_width]` float32 pixel values; raises EngineError(bad_request) when undecodable."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.width * img.height > MAX_PIXELS:
                raise bad_image(f"image of {img.width}x{img.height} pixels is too large")
            rgb = img.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
        raise bad_image(f"cannot decode image: {e}") from e
    w, h = rgb.size
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = spec.shortest_edge, int(spec.shortest_edge * long / short)
    size = (new_short, new_long) if w <= h else (new_long, new_short)
    rgb = rgb.resize(size, resample=Image.Resampling(spec.resample))
    w, h = rgb.size
    top, left = max(0, (h - spec.crop_height) // 2), max(0, (w - spec.crop_width) // 2)
    rgb = rgb.crop((left, top, left + spec.crop_width, top + spec.crop_height))
    pixels = torch.frombuffer(bytearray(rgb.tobytes()), dtype=torch.uint8)
    x = pixels.view(spec.crop_height, spec.crop_width, 3).permute(2, 0, 1).float() * spec.rescale_factor
    mean = torch.tensor(spec.mean).view(3, 1, 1)
    std = torch.tensor(spec.std).view(3, 1, 1)
    return ((x - mean) / std).contiguous()


def image_hash(pixels: torch.Tensor) -> str:
    """sha256 of the preprocessed pixels: the same picture in another file format hashes the same."""
    return hashlib.sha256(pixels.contiguous().numpy().tobytes()).hexdigest()
