"""The tiny vision-language model: a Llava (tiny CLIP vision tower + projector + the tiny Llama).

Made offline and seeded like the tiny text model (`shared.model.tiny`), with the
same byte-level tokenizer plus one special token, `<image>`, which the frontend
puts where a chat message has an image part. Images are 32x32 pixels in 8x8
patches: each becomes 16 embeddings (the CLS embedding is dropped, as LLaVA does).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from shared.model.tiny import BOS_ID, CHAT_TEMPLATE, EOS_ID, LOGIT_SCALE, SPECIALS, _tokenizer_json

IMAGE_TOKEN = "<image>"
IMAGE_TOKEN_ID = 256 + len(SPECIALS)  # the last special token
IMAGE_SIZE, PATCH_SIZE = 32, 8
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
IMAGE_SCALE = 8.0
MARKER = ".shoal-tiny-vlm-complete"
FILES = ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
         "chat_template.jinja", "preprocessor_config.json", MARKER)


def make_tiny_vlm(out_dir: Path | str, *, seed: int = 0) -> Path:
    """Write the tiny VLM to `out_dir` (replacing an earlier one there) and return its path."""
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(p.name not in FILES for p in out.iterdir())):
        raise FileExistsError(f"{out} exists and is not a tiny VLM directory")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        tmp.chmod(0o755)
        _write_tokenizer(tmp)
        _write_model(tmp, seed)
        (tmp / "preprocessor_config.json").write_text(json.dumps(preprocessor_config(), indent=1))
        (tmp / MARKER).write_text(json.dumps({"seed": seed}))
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def preprocessor_config() -> dict[str, object]:
    """CLIP's image processor settings (shortest edge resize, centre crop, rescale, normalise)."""
    return {
        "image_processor_type": "CLIPImageProcessor", "do_convert_rgb": True, "do_resize": True,
        "size": {"shortest_edge": IMAGE_SIZE}, "resample": 3, "do_center_crop": True,
        "crop_size": {"height": IMAGE_SIZE, "width": IMAGE_SIZE}, "do_rescale": True,
        "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": CLIP_MEAN, "image_std": CLIP_STD,
    }


def _write_tokenizer(out: Path) -> None:
    (out / "tokenizer.json").write_text(_tokenizer_json([*SPECIALS, IMAGE_TOKEN]))
    (out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": SPECIALS[0], "eos_token": SPECIALS[1],
        "add_bos_token": False, "add_eos_token": False, "clean_up_tokenization_spaces": False,
        "model_max_length": 4096, "chat_template": CHAT_TEMPLATE, "image_token": IMAGE_TOKEN,
    }, indent=1))
    (out / "chat_template.jinja").write_text(CHAT_TEMPLATE)


def _write_model(out: Path, seed: int) -> None:
    import torch
    from safetensors.torch import save_file
    from transformers import CLIPVisionConfig, GenerationConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    text = LlamaConfig(
        vocab_size=IMAGE_TOKEN_ID + 1, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=4096,
        bos_token_id=BOS_ID, eos_token_id=EOS_ID, tie_word_embeddings=False,
    )
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                              image_size=IMAGE_SIZE, patch_size=PATCH_SIZE, projection_dim=32)
    cfg = LlavaConfig(vision_config=vision, text_config=text, image_token_index=IMAGE_TOKEN_ID,
                      vision_feature_layer=-2, vision_feature_select_strategy="default",
                      projector_hidden_act="gelu", tie_word_embeddings=False)
    cfg.image_token_id = IMAGE_TOKEN_ID
    cfg.bos_token_id, cfg.eos_token_id = BOS_ID, EOS_ID
    cfg.architectures = ["LlavaForConditionalGeneration"]
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(cfg).float()
    with torch.no_grad():
        model.lm_head.weight.mul_(LOGIT_SCALE)
        model.model.multi_modal_projector.linear_2.weight.mul_(IMAGE_SCALE)  # images that sway the output
    weights = {k: v.detach().contiguous() for k, v in sorted(model.state_dict().items())}
    save_file(weights, str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "model.safetensors").chmod(0o644)
    cfg.to_json_file(str(out / "config.json"), use_diff=False)
    GenerationConfig(bos_token_id=BOS_ID, eos_token_id=EOS_ID).to_json_file(str(out / "generation_config.json"))
