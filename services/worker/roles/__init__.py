"""One module per role a worker can serve; `role_factory` picks one from the worker's config.

Roles import lazily: an aggregated worker loads no NIXL, an embedding worker no images.
"""

from __future__ import annotations

from services.worker.args import WorkerConfig
from services.worker.role import RoleFactory
from shared.engine.base import Engine
from shared.engine.capabilities import BootstrapKv


def role_factory(cfg: WorkerConfig, engine: Engine) -> RoleFactory:
    """Disaggregation is shoal's (NIXL) unless the engine moves its KV itself (BootstrapKv: SGLang)."""
    if cfg.score:
        from services.worker.roles.score import score_role

        return score_role
    if cfg.embedding:
        from services.worker.roles.embedding import embedding_role

        return embedding_role
    if cfg.disaggregation_mode == "null":
        from services.worker.roles.aggregated import aggregated_role

        return aggregated_role
    if cfg.disaggregation_mode == "decode":
        if isinstance(engine, BootstrapKv):
            from services.worker.roles.sglang_pair import sglang_decode_role

            return sglang_decode_role
        from services.worker.roles.decode import decode_role

        return decode_role
    from services.worker.roles.prefill import prefill_role

    return prefill_role


