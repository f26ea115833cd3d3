"""peft LoRA adapters made by the tests on the tiny model, and what transformers + peft make with them."""

from __future__ import annotations

from pathlib import Path

import torch

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def make_adapter(base: Path, out: Path, seed: int, rank: int = 4, alpha: int = 8) -> Path:
    """A peft LoRA folder with seeded random A and non-zero B (peft starts B at zero: no effect)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    peft_model = get_peft_model(model, LoraConfig(r=rank, lora_alpha=alpha, target_modules=TARGETS))
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.2)
    peft_model.save_pretrained(out)
    return out


def merged_greedy(base: Path, adapter: Path | None, prompts: list[list[int]], max_tokens: int) -> list[list[int]]:
    """Greedy tokens from transformers, with the adapter merged into the weights by peft."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    if adapter is not None:
        model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    model.eval()
    out = []
    with torch.no_grad():
        for ids in prompts:
            gen = model.generate(torch.tensor([ids]), max_new_tokens=max_tokens, min_new_tokens=max_tokens,
                                 do_sample=False, pad_token_id=0)
            out.append(gen[0, len(ids):].tolist())
    return out


def make_wrong_shape_adapter(good: Path, out: Path, module: str = "down_proj") -> Path:
    """A copy of a peft adapter whose `module` B matrices have one output row too many (a different model's)."""
    import shutil

    from safetensors.torch import load_file, save_file

    shutil.copytree(good, out)
    tensors = load_file(str(good / "adapter_model.safetensors"))
    for key, t in tensors.items():
        if f"{module}.lora_B" in key:
            tensors[key] = torch.cat([t, t[:1]])
    save_file(tensors, str(out / "adapter_model.safetensors"))
    return out
