"""The NIXL Python API, whichever wheel provides it (`nixl`, or `nixl_cu12` from PyPI)."""

from __future__ import annotations

try:
    from nixl._api import nixl_agent, nixl_agent_config
except ImportError:  # the CUDA 12 wheel installs under its own name
    from nixl_cu12._api import nixl_agent, nixl_agent_config

__all__ = ["nixl_agent", "nixl_agent_config"]
