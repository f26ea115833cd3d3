"""Runs a Llama-family Hugging Face model over the paged KV cache, one batched step at a time.

Every scheduled sequence's new tokens are packed into one `[tokens, hidden]`
batch for the projections and MLPs; attention reads each sequence's past K/V
from its blocks: decodes as one padded, masked batch, prefill chunks one by one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from shared.engine.reference.config import ReferenceConfig
from shared.engine.reference.kv_cache import KvCache
from shared.engine.reference.logits import History
from shared.engine.reference.lora import LoraManager
from shared.engine.reference.pooling import PoolingSpec, embed_batches, padded_batch, pool, read_pooling
from shared.engine.reference.prompt_logprobs import score_rows
from shared.engine.reference.sampler import SampleOutput, sample
from shared.engine.reference.sequence import SamplingSpec
from shared.grammar import TokenMask
from shared.multimodal.vision import VisionTower, is_llava, load_llava

SUPPORTED = ("llama", "mistral", "qwen2", "qwen3")


class UnsupportedModelError(ValueError):
    """The model directory holds an architecture this engine cannot run."""


@dataclass
class StepItem:
    """One sequence's share of a step: `num_tokens` new tokens from position `start`."""

    token_ids: list[int]
    start: int
    block_ids: list[int]  # a copy: the engine may free the table while the step runs
    sample: SamplingSpec | None  # set when this chunk ends the known tokens (a token is drawn)
    banned: frozenset[int] = frozenset()
    history: History | None = None  # set when `sample` adjusts logits by the tokens so far
    embeds: list[tuple[int, torch.Tensor]] = field(default_factory=list)  # (row in token_ids, image rows)
    mask: TokenMask | None = None  # the request's grammar (structured output), when `sample` is set
    lora: str = ""  # the LoRA adapter these rows run with ("": the base model)
    prompt_targets: list[int] | None = None  # prompt logprobs asked: the prompt tokens these rows predict
    prompt_top: int = 0  # and how many alternatives per row


@dataclass
class _Plan:
    """Index tensors for one step, built once and shared by every layer."""

    key_slots: torch.Tensor
    decode_rows: torch.Tensor | None  # token rows of the decode group (None: no decodes)
    decode_table: torch.Tensor | None
    decode_mask: torch.Tensor | None
    prefills: list[tuple[int, int, int, torch.Tensor]]  # (row, num_tokens, start, block table)
    sample_rows: torch.Tensor


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


class ModelRunner:
    def __init__(self, cfg: ReferenceConfig) -> None:
        from transformers import AutoConfig, AutoModelForCausalLM

        self.device = torch.device(cfg.device)
        self.dtype = resolve_dtype(cfg.dtype, self.device)
        hf_cfg = AutoConfig.from_pretrained(cfg.model_path)
        self.vision: VisionTower | None = None
        if is_llava(hf_cfg):  # a vision-language model: run its language model, keep its vision tower
            _check_supported(hf_cfg.text_config)
            llava = load_llava(cfg.model_path, self.dtype, self.device)
            self.vision = VisionTower(llava)
            self.model: Any = _TextModel(llava)
            hf_cfg = hf_cfg.text_config
        else:
            _check_supported(hf_cfg)
            model = AutoModelForCausalLM.from_pretrained(cfg.model_path, dtype=self.dtype)
            self.model = model.to(self.device).eval()
        self.hf_config = hf_cfg
        self.num_heads = hf_cfg.num_attention_heads
        self.num_kv_heads = getattr(hf_cfg, "num_key_value_heads", None) or self.num_heads
        self.head_dim = getattr(hf_cfg, "head_dim", None) or hf_cfg.hidden_size // self.num_heads
        self.layers = list(self.model.model.layers)
        self.page_size = cfg.page_size
        self.kv = KvCache(len(self.layers), self._num_blocks(cfg), cfg.page_size, self.num_kv_heads,
                          self.head_dim, self.dtype, self.device)
        self.eos_ids = eos_token_ids(self.model)
        self.max_position = _max_position(hf_cfg)
        self.pooling = read_pooling(cfg.model_path, PoolingSpec("lasttoken"))
        self.lora = LoraManager(self.layers, cfg.max_lora_rank, self.dtype, self.device) if cfg.enable_lora else None

    def _num_blocks(self, cfg: ReferenceConfig) -> int:
        if cfg.num_blocks > 0:
            return cfg.num_blocks
        per_block = KvCache.bytes_per_token_block(len(self.layers), cfg.page_size, self.num_kv_heads,
                                                  self.head_dim, self.dtype)
        return max(1, cfg.kv_cache_memory // per_block)

    # ---- one step ----------------------------------------------------------------------
    @torch.inference_mode()
    def step(self, items: list[StepItem]) -> SampleOutput | None:
        """Compute KV for every item's new tokens; draw a token for items with `sample` set."""
        if self.lora is None:
            return self._step(items)
        self.lora.begin_step([(it.lora, len(it.token_ids)) for it in items])
        try:
            return self._step(items)
        finally:
            self.lora.end_step()

    def _step(self, items: list[StepItem]) -> SampleOutput | None:
        ids = [t for it in items for t in it.token_ids]
        positions = [p for it in items for p in range(it.start, it.start + len(it.token_ids))]
        plan = self._plan(items, positions)
        pos = torch.tensor(positions, device=self.device)
        x = self._embed(items, torch.tensor(ids, device=self.device))
        cos, sin = self.model.model.rotary_emb(x, pos[None, :])
        rope = (cos[0, :, None, :], sin[0, :, None, :])
        for i, layer in enumerate(self.layers):
            x = x + self._attention(i, layer.self_attn, layer.input_layernorm(x), rope, plan)
            x = x + layer.mlp(layer.post_attention_layernorm(x))
        prompt = score_rows(self.model, x, _prompt_jobs(items)) if any(
            it.prompt_targets is not None for it in items) else {}
        specs = [it.sample for it in items if it.sample is not None]
        if not specs:
            return SampleOutput([], None, [], prompt) if prompt else None
        last = self.model.model.norm(x[plan.sample_rows])
        logits = self.model.lm_head(last).float()
        drawn = [it for it in items if it.sample is not None]
        out = sample(logits, specs, [it.banned for it in drawn], [it.history for it in drawn],
                     [it.mask for it in drawn])
        out.prompt = prompt
        return out

    def _embed(self, items: list[StepItem], ids: torch.Tensor) -> torch.Tensor:
        """Token embeddings; image positions (pad ids beyond the vocabulary) take the image's embeddings."""
        if not any(it.embeds for it in items):
            return self.model.model.embed_tokens(ids)
        x = self.model.model.embed_tokens(ids.clamp(max=self.hf_config.vocab_size - 1))
        base = 0
        for it in items:
            for row, emb in it.embeds:
                x[base + row : base + row + emb.shape[0]] = emb.to(x.dtype)
            base += len(it.token_ids)
        return x

    @torch.inference_mode()
    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """`[N, 3, H, W]` -> `[N, tokens, hidden]` with the model's own vision tower (EPD)."""
        if self.vision is None:
            raise ValueError("this model has no vision tower")
        return self.vision.encode(pixels)

    # ---- embeddings --------------------------------------------------------------------
    @torch.inference_mode()
    def embed(self, inputs: list[list[int]], normalize: bool, max_batch_tokens: int) -> list[list[float]]:
        """One pooled final hidden state (after the final norm) per input: the model's sentence-transformers
        pooling, else the last token (SGLang's LAST pooler).

        Inputs are right-padded into batches of at most `max_batch_tokens` padded tokens; with causal
        attention the real tokens never see the padding, so batching does not change a vector.
        """
        out: list[list[float]] = []
        for batch in embed_batches(inputs, max_batch_tokens):
            ids, mask = padded_batch(batch, self.device)
            hidden = self.model.model(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
            out.extend(pool(hidden, mask, self.pooling, normalize).cpu().tolist())
        return out

    def _plan(self, items: list[StepItem], positions: list[int]) -> _Plan:
        ps, dev = self.page_size, self.device
        blocks = [it.block_ids[p // ps] for it in items for p in range(it.start, it.start + len(it.token_ids))]
        offsets = [p % ps for p in positions]
        key_slots = self.kv.key_slots(torch.tensor(blocks, device=dev), torch.tensor(offsets, device=dev))
        rows, ends, dec_rows, dec_items, prefills = 0, [], [], [], []
        for it in items:
            n = len(it.token_ids)
            if n == 1:
                dec_rows.append(rows)
                dec_items.append(it)
            else:
                table = torch.tensor(it.block_ids[: -(-(it.start + n) // ps)], device=dev)
                prefills.append((rows, n, it.start, table))
            rows += n
            if it.sample is not None:
                ends.append(rows - 1)
        plan = _Plan(key_slots, None, None, None, prefills, torch.tensor(ends, dtype=torch.long, device=dev))
        if dec_items:
            self._plan_decodes(plan, dec_rows, dec_items, rows)
        return plan

    def _plan_decodes(self, plan: _Plan, dec_rows: list[int], dec_items: list[StepItem], num_rows: int) -> None:
        ps, dev = self.page_size, self.device
        width = max(it.start // ps + 1 for it in dec_items)
        table = [it.block_ids[:width] + [0] * (width - min(width, len(it.block_ids))) for it in dec_items]
        ctx = torch.tensor([it.start + 1 for it in dec_items], device=dev)
        plan.decode_table = torch.tensor(table, device=dev)
        plan.decode_mask = (torch.arange(width * ps, device=dev)[None, :] < ctx[:, None])[:, None, None, :]
        if len(dec_rows) < num_rows:
            plan.decode_rows = torch.tensor(dec_rows, device=dev)

    def _attention(self, layer: int, attn: torch.nn.Module, x: torch.Tensor,
                   rope: tuple[torch.Tensor, torch.Tensor], plan: _Plan) -> torch.Tensor:
        t = x.shape[0]
        q = attn.q_proj(x).view(t, self.num_heads, self.head_dim)
        k = attn.k_proj(x).view(t, self.num_kv_heads, self.head_dim)
        v = attn.v_proj(x).view(t, self.num_kv_heads, self.head_dim)
        if hasattr(attn, "q_norm"):  # Qwen3
            q, k = attn.q_norm(q), attn.k_norm(k)
        q, k = _rotate(q, *rope), _rotate(k, *rope)
        self.kv.write(layer, plan.key_slots, k, v)
        out = torch.empty_like(q) if plan.prefills else None
        if plan.decode_table is not None:
            dec = self._decode_attention(layer, q, plan, attn.scaling)
            if out is None:
                out = dec
            else:
                out[plan.decode_rows if plan.decode_rows is not None else slice(None)] = dec
        for row, n, start, table in plan.prefills:
            kp, vp = (k[row : row + n], v[row : row + n]) if start == 0 else self._past(layer, table, start + n)
            out[row : row + n] = self._prefill_attention(q[row : row + n], kp, vp, start, attn.scaling)
        return attn.o_proj(out.reshape(t, self.num_heads * self.head_dim))

    def _decode_attention(self, layer: int, q: torch.Tensor, plan: _Plan, scale: float) -> torch.Tensor:
        if plan.decode_rows is not None:
            q = q[plan.decode_rows]
        k, v = self.kv.gather(layer, plan.decode_table)
        o = F.scaled_dot_product_attention(q[:, :, None, :], k.transpose(1, 2), v.transpose(1, 2),
                                           attn_mask=plan.decode_mask, scale=scale, enable_gqa=True)
        return o[:, :, 0, :]

    def _past(self, layer: int, table: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        k, v = self.kv.gather(layer, table[None, :])
        return k[0, :length], v[0, :length]

    @staticmethod
    def _prefill_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, start: int,
                           scale: float) -> torch.Tensor:
        n = q.shape[0]
        mask = None
        if start > 0:  # query i sits at position start + i and sees keys 0..start + i
            mask = torch.ones(n, start + n, dtype=torch.bool, device=q.device).tril(start)
        o = F.scaled_dot_product_attention(q.transpose(0, 1)[None], k.transpose(0, 1)[None],
                                           v.transpose(0, 1)[None], attn_mask=mask, is_causal=start == 0,
                                           scale=scale, enable_gqa=True)
        return o[0].transpose(0, 1)


def _prompt_jobs(items: list[StepItem]) -> list[tuple[int, int, list[int], int]]:
    """(item index, its first row, its prompt targets, top-k) of the items asking for prompt logprobs."""
    jobs, row = [], 0
    for i, it in enumerate(items):
        if it.prompt_targets is not None:
            jobs.append((i, row, it.prompt_targets, it.prompt_top))
        row += len(it.token_ids)
    return jobs


class _TextModel:
    """A Llava's language half shaped like a *ForCausalLM: `.model` (decoder), `.lm_head`, configs."""

    def __init__(self, llava: Any) -> None:
        self.model = llava.model.language_model
        self.lm_head = llava.lm_head
        self.config = llava.config.text_config
        self.generation_config = getattr(llava, "generation_config", None)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


def _check_supported(hf_cfg: object) -> None:
    kind = getattr(hf_cfg, "model_type", "?")
    if kind not in SUPPORTED:
        raise UnsupportedModelError(f"the reference engine runs Llama-family decoders ({', '.join(SUPPORTED)}); "
                                    f"this model is {kind!r}")


def eos_token_ids(model: torch.nn.Module) -> frozenset[int]:
    """Every EOS id the model's generation config and config name."""
    ids: set[int] = set()
    for source in (getattr(model, "generation_config", None), model.config):
        eos = getattr(source, "eos_token_id", None)
        if isinstance(eos, int):
            ids.add(eos)
        elif eos:
            ids.update(eos)
    return frozenset(ids)


def _max_position(hf_cfg: object) -> int:
    limit = int(getattr(hf_cfg, "max_position_embeddings", 4096))
    window = getattr(hf_cfg, "sliding_window", None)
    if window and getattr(hf_cfg, "use_sliding_window", True):  # no sliding-window attention here
        limit = min(limit, int(window))
    return limit


