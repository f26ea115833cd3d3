"""The SGLang engine adapter (GPU). Importing this package never imports sglang."""

from shared.engine.sglang.args import SglangConfig, build_sglang_config
from shared.engine.sglang.argv import SglangArgsError
from shared.engine.sglang.engine import SglangEngine

__all__ = ["SglangArgsError", "SglangConfig", "SglangEngine", "build_sglang_config"]
