"""shoal's wire protocol: pure data, no I/O."""

from protocol.codec import decode, decoder, encode
from protocol.discovery import InstanceRecord, ModelCard, RuntimeConfig
from protocol.kv_events import (
    AllBlocksCleared,
    BlockRemoved,
    BlockStored,
    KvEvent,
    KvEventBatch,
    WorkerLoad,
)
from protocol.messages import (
    HTTP_STATUS,
    PROTOCOL_VERSION,
    BootstrapInfo,
    Cancel,
    EngineRequest,
    ErrorCode,
    ErrorInfo,
    OutputChunk,
    OutputOptions,
    RoutingHints,
    SamplingOptions,
    StopConditions,
    StreamFrame,
    TopLogprob,
    Usage,
)

__all__ = [
    "HTTP_STATUS",
    "PROTOCOL_VERSION",
    "AllBlocksCleared",
    "BlockRemoved",
    "BlockStored",
    "BootstrapInfo",
    "Cancel",
    "EngineRequest",
    "ErrorCode",
    "ErrorInfo",
    "InstanceRecord",
    "KvEvent",
    "KvEventBatch",
    "ModelCard",
    "OutputChunk",
    "OutputOptions",
    "RoutingHints",
    "RuntimeConfig",
    "SamplingOptions",
    "StopConditions",
    "StreamFrame",
    "TopLogprob",
    "Usage",
    "WorkerLoad",
    "decode",
    "decoder",
    "encode",
]
