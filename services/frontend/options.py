"""What the frontend's request path is configured with (built from the flags in services.frontend.args)."""

from __future__ import annotations

from dataclasses import dataclass, field

from services.frontend.limits import RequestLimits
from services.frontend.lora_flags import LoraAdminOptions

DEFAULT_MAX_RERANK_DOCUMENTS = 1000  # documents (or score pairs) per /v1/rerank or /v1/score request


@dataclass(frozen=True)
class FrontendOptions:
    api_key: str | None = None
    max_prompt_tokens: int | None = None
    direct_header: str = "x-shoal-instance-id"
    router_mode: str = "round-robin"
    ignore_unknown_fields: bool = False
    tool_call_parser: str | None = None  # override the model card's
    reasoning_parser: str | None = None
    session_from: str = "header"  # --router-session-affinity-from (shared.routing.session_key)
    tenant_header: str = ""  # --tenant-header (services.frontend.admission_hook)
    max_rerank_documents: int = DEFAULT_MAX_RERANK_DOCUMENTS
    limits: RequestLimits = field(default_factory=RequestLimits)  # services.frontend.limits (issue 22)
    lora_admin: LoraAdminOptions = field(default_factory=LoraAdminOptions)  # run-time adapter loads (issue 22)

    @property
    def direct(self) -> bool:
        return self.router_mode == "direct"
