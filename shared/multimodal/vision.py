"""Llava's vision tower and projector (transformers): pixels -> one embedding per image token."""

from __future__ import annotations

from typing import Any

import torch


def is_llava(hf_cfg: Any) -> bool:
    return getattr(hf_cfg, "model_type", "") == "llava"


def read_llava_config(path: str) -> Any | None:
    """The model's config when it is a Llava (vision-language) model, else None."""
    import json
    from pathlib import Path

    f = Path(path) / "config.json"
    if not f.is_file() or json.loads(f.read_text()).get("model_type") != "llava":
        return None
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(path)


def load_llava(path: str, dtype: torch.dtype, device: torch.device) -> Any:
    from transformers import LlavaForConditionalGeneration

    return LlavaForConditionalGeneration.from_pretrained(path, dtype=dtype).to(device).eval()


def tokens_per_image(hf_cfg: Any) -> int:
    v = hf_cfg.vision_config
    n = (v.image_size // v.patch_size) ** 2
    return n + 1 if getattr(hf_cfg, "vision_feature_select_strategy", "default") == "full" else n


def image_token_id(hf_cfg: Any) -> int:
    tid = getattr(hf_cfg, "image_token_id", None)
    return int(tid if tid is not None else hf_cfg.image_token_index)


class VisionTower:
    """Encodes preprocessed images with a loaded LlavaForConditionalGeneration's vision parts."""

    def __init__(self, llava: Any) -> None:
        self.llava = llava
        self.cfg = llava.config
        self.num_tokens = tokens_per_image(self.cfg)
        self.hidden_size = int(self.cfg.text_config.hidden_size)
        self.device = next(llava.parameters()).device
        self.dtype = next(llava.parameters()).dtype

    @torch.inference_mode()
    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """`[N, 3, H, W]` -> `[N, num_tokens, hidden]` (LlavaModel.get_image_features, as generate() uses it)."""
        out = self.llava.model.get_image_features(
            pixel_values=pixels.to(self.device, self.dtype), vision_feature_layer=self.cfg.vision_feature_layer,
            vision_feature_select_strategy=self.cfg.vision_feature_select_strategy)
        feats = getattr(out, "pooler_output", out)
        if isinstance(feats, (list, tuple)):
            feats = torch.stack(list(feats))
        return feats
