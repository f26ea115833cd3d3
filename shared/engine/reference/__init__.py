"""The reference engine: PyTorch + transformers over a paged KV cache (CPU or CUDA)."""

from shared.engine.reference.config import ReferenceConfig
from shared.engine.reference.engine import ImportedKv, ReferenceEngine
from shared.engine.reference.model_runner import UnsupportedModelError

__all__ = ["ImportedKv", "ReferenceConfig", "ReferenceEngine", "UnsupportedModelError"]
