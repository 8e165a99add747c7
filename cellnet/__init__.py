"""cellnet: federated computing on a peer-to-peer cell network with a native hot path.

The names below are the public API (pinned by tests/test_public_api.py);
submodules hold the rest: ``cellnet.native`` (C core), ``cellnet.wire``
(sans-IO frames), ``cellnet.fqcn``, ``cellnet.routing``, ``cellnet.defs``
(reference constants) and ``cellnet.security`` (provisioning, TLS).
"""

from __future__ import annotations

from cellnet import defs, errors, fqcn, native, routing, wire
from cellnet.defs import (
    RC_TABLE,
    AdminCommandNames,
    CellReturnCode,
    JobMetaKey,
    ReturnCode,
    RunStatus,
    to_return_code,
)
from cellnet.errors import (
    AggregationError,
    AuthError,
    BufferTooSmallError,
    CellnetError,
    CertificateExpiredError,
    CertificateNotYetValidError,
    ChecksumError,
    CorruptDataError,
    DTypeError,
    DuplicateContributionError,
    FilterConfigError,
    FilterError,
    FQCNError,
    FrameChecksumError,
    FrameFormatError,
    FrameTooLargeError,
    IdentityMismatchError,
    IllegalTransitionError,
    InvalidArgumentError,
    JobError,
    JobNotFoundError,
    JobValidationError,
    LimitExceededError,
    LinkBusyError,
    LinkClosedError,
    LinkError,
    LocalProtocolError,
    MissingCertificateError,
    NativeBuildError,
    NativeError,
    ProtocolError,
    ProvisionError,
    RemoteProtocolError,
    RouteError,
    ShapeError,
    SubmitConflictError,
    TruncatedError,
    UnknownCAError,
    UnsupportedVersionError,
)
from cellnet.fqcn import agent_site_fqcn
from cellnet.message import Message, MessageHeaderKey, MessageType, PayloadKind
from cellnet.native import (
    TensorPack,
    WeightedAccumulator,
    crc32c,
)
from cellnet.native import decode as decode_tensors
from cellnet.native import encode as encode_tensors
from cellnet.routing import MAX_HOPS, next_hop

__version__ = "0.1.0"

#: Submodules that do I/O (ssl, sockets, trio) load on first use, so the
#: sans-IO core imports none of them.
_LAZY_SUBMODULES = frozenset(
    {"admin", "bridge", "cell", "client", "fl", "link", "node", "security", "stream", "transport",
     "workspace"}
)
#: Public names that live in those submodules: name -> module.
_LAZY_NAMES = {
    "Cell": "cellnet.cell",
    "connect_in_process": "cellnet.cell",
    "CellBridge": "cellnet.bridge",
    "Link": "cellnet.link",
    "LinkConfig": "cellnet.link",
    "TLSStream": "cellnet.transport",
    "open_link_stream": "cellnet.transport",
    "serve_links": "cellnet.transport",
    "provision": "cellnet.security",
    "StartupKit": "cellnet.security",
    "Job": "cellnet.fl",
    "JobStore": "cellnet.fl",
    "load_job_folder": "cellnet.fl",
    "zip_job_folder": "cellnet.fl",
    "pick_jobs": "cellnet.fl",
    "CellNode": "cellnet.node",
    "Workspace": "cellnet.workspace",
    "StreamSender": "cellnet.stream",
    "StreamReceiver": "cellnet.stream",
    "StreamMux": "cellnet.stream",
    "BufferPool": "cellnet.stream",
    "stream_progress": "cellnet._streaming",
    "ServerRunner": "cellnet.fl.runtime",
    "SiteRunner": "cellnet.fl.runtime",
    "JobClient": "cellnet.fl.runtime",
    "Controller": "cellnet.fl.runtime",
    "Executor": "cellnet.fl.runtime",
    "FLContext": "cellnet.fl.runtime",
    "ClientAPIExecutor": "cellnet.fl.runtime",
    "ScatterAndGather": "cellnet.fl.workflows",
    "CyclicWorkflow": "cellnet.fl.workflows",
    "CrossSiteEval": "cellnet.fl.workflows",
    "NPModelPersistor": "cellnet.fl.persistor",
    "FlareAgent": "cellnet.client",
    "AgentClosed": "cellnet.client",
    "CallStateError": "cellnet.client",
}


def __getattr__(name: str):
    import importlib

    if name in _LAZY_SUBMODULES:
        return importlib.import_module(f"cellnet.{name}")
    if name in _LAZY_NAMES:
        return getattr(importlib.import_module(_LAZY_NAMES[name]), name)
    raise AttributeError(f"module 'cellnet' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | _LAZY_SUBMODULES | set(_LAZY_NAMES))

__all__ = [
    "MAX_HOPS",
    "RC_TABLE",
    "AdminCommandNames",
    "AggregationError",
    "AuthError",
    "BufferTooSmallError",
    "CellReturnCode",
    "CellnetError",
    "CertificateExpiredError",
    "CertificateNotYetValidError",
    "ChecksumError",
    "CorruptDataError",
    "DTypeError",
    "DuplicateContributionError",
    "FQCNError",
    "FilterConfigError",
    "FilterError",
    "FrameChecksumError",
    "FrameFormatError",
    "FrameTooLargeError",
    "IdentityMismatchError",
    "IllegalTransitionError",
    "InvalidArgumentError",
    "JobError",
    "JobMetaKey",
    "JobNotFoundError",
    "JobValidationError",
    "LimitExceededError",
    "LinkBusyError",
    "LinkClosedError",
    "LinkError",
    "LocalProtocolError",
    "Message",
    "MessageHeaderKey",
    "MessageType",
    "MissingCertificateError",
    "NativeBuildError",
    "NativeError",
    "PayloadKind",
    "ProtocolError",
    "ProvisionError",
    "RemoteProtocolError",
    "ReturnCode",
    "RouteError",
    "RunStatus",
    "ShapeError",
    "SubmitConflictError",
    "TensorPack",
    "TruncatedError",
    "UnknownCAError",
    "UnsupportedVersionError",
    "WeightedAccumulator",
    "__version__",
    "agent_site_fqcn",
    "crc32c",
    "decode_tensors",
    "defs",
    "encode_tensors",
    "errors",
    "fqcn",
    "native",
    "next_hop",
    "routing",
    "security",
    "to_return_code",
    "wire",
]
