"""Image preprocessing as CLIP's image processor does it, with PIL and torch (no torchvision).

Convert to RGB, resize the shortest edge (bicubic), centre-crop, rescale to
[0, 1], normalise by mean and std. Settings come from the model directory's
`preprocessor_config.json`. The image's size is read from its header and
checked against `--max-image-pixels` before anything is decoded (PIL's own
decompression-bomb guard is set to the same limit); decoding runs in a
bounded pool of its own (`ImageDecoder`), never on the event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch

from shared.multimodal.fetch import MediaOptions, bad_image

MAX_PIXELS = MediaOptions().max_image_pixels  # refuse decompression bombs


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


def preprocess(data: bytes, spec: ImageSpec, max_pixels: int = MAX_PIXELS) -> torch.Tensor:
    """`[3, crop_height, crop_width]` float32 pixel values; raises EngineError(bad_request) when undecodable
    or larger than `max_pixels` (known from the header, before decoding)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:  # reads the header only
            if img.width * img.height > max_pixels:
                raise bad_image(f"image of {img.width}x{img.height} pixels is larger than {max_pixels} pixels")
            rgb = img.convert("RGB")
    except Image.DecompressionBombError:  # PIL's guard, at open: over twice the limit
        raise bad_image(f"image is larger than {max_pixels} pixels") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise bad_image(f"cannot decode image ({type(e).__name__})") from e
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


class ImageDecoder:
    """Decodes and preprocesses images in `threads` threads of its own (a bounded pool, off the event loop)."""

    def __init__(self, spec: ImageSpec, opts: MediaOptions = MediaOptions()) -> None:
        from PIL import Image

        self.spec, self.max_pixels = spec, opts.max_image_pixels
        Image.MAX_IMAGE_PIXELS = opts.max_image_pixels  # PIL's own guard too (process-wide: one decoder config)
        self._pool = ThreadPoolExecutor(max_workers=max(1, opts.decode_threads), thread_name_prefix="image-decode")

    async def decode(self, datas: Sequence[bytes]) -> list[torch.Tensor]:
        loop = asyncio.get_running_loop()
        return list(await asyncio.gather(*(loop.run_in_executor(self._pool, preprocess, d, self.spec,
                                                                self.max_pixels) for d in datas)))

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
