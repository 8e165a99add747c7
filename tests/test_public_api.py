"""The public API re-exported from ``cellnet`` is pinned: removing a name is a decision."""

from __future__ import annotations

import subprocess
import sys

import cellnet

PINNED = {
    "MAX_HOPS", "RC_TABLE", "AdminCommandNames", "AuthError", "BufferTooSmallError",
    "CellReturnCode", "CellnetError", "CertificateExpiredError", "CertificateNotYetValidError",
    "ChecksumError", "CorruptDataError", "DTypeError", "FQCNError", "FrameChecksumError",
    "FrameFormatError", "FrameTooLargeError", "IdentityMismatchError", "InvalidArgumentError",
    "JobMetaKey", "LimitExceededError", "LocalProtocolError", "Message", "MessageHeaderKey",
    "MessageType", "MissingCertificateError", "NativeBuildError", "NativeError", "PayloadKind",
    "ProtocolError", "ProvisionError", "RemoteProtocolError", "ReturnCode", "RunStatus",
    "ShapeError", "TensorPack", "TruncatedError", "UnknownCAError", "UnsupportedVersionError",
    "WeightedAccumulator", "__version__", "agent_site_fqcn", "crc32c", "decode_tensors",
    "defs", "encode_tensors", "errors", "fqcn", "native", "next_hop", "routing", "security",
    "to_return_code", "wire", "LinkBusyError", "LinkClosedError", "LinkError", "RouteError",
    "IllegalTransitionError", "JobError", "JobNotFoundError", "JobValidationError",
    "SubmitConflictError", "AggregationError", "DuplicateContributionError",
    "FilterConfigError", "FilterError",
}

LAZY = {
    "Cell", "CellBridge", "Link", "LinkConfig", "StartupKit", "TLSStream", "bridge", "cell",
    "connect_in_process", "link", "open_link_stream", "provision", "security", "serve_links",
    "transport", "fl", "Job", "JobStore", "load_job_folder", "zip_job_folder", "pick_jobs",
    "node", "CellNode", "workspace", "Workspace", "stream", "StreamSender", "StreamReceiver",
    "StreamMux", "ServerRunner", "SiteRunner", "JobClient", "Controller", "Executor", "FLContext",
    "admin", "client", "ClientAPIExecutor", "ScatterAndGather", "CyclicWorkflow", "CrossSiteEval",
    "NPModelPersistor", "FlareAgent", "AgentClosed", "CallStateError", "BufferPool",
    "stream_progress",
}


def test_all_is_pinned_and_resolves():
    assert set(cellnet.__all__) == PINNED
    for name in cellnet.__all__:
        assert getattr(cellnet, name) is not None


def test_lazy_names_resolve_on_first_use():
    for name in LAZY:
        assert getattr(cellnet, name) is not None, name
    assert LAZY <= set(dir(cellnet))


def test_every_error_derives_from_cellnet_error():
    for name in [*cellnet.__all__, *LAZY]:
        obj = getattr(cellnet, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, cellnet.CellnetError), name


def test_subpackage_all_names_resolve():
    import cellnet.fl.runtime
    import cellnet.fl.workflows

    for mod in (cellnet.native, cellnet.wire, cellnet.security, cellnet.fl.runtime,
                cellnet.fl.workflows, cellnet.client):
        for name in mod.__all__:
            assert hasattr(mod, name), f"{mod.__name__}.{name}"


def test_import_does_not_pull_in_io_libraries():
    """Importing cellnet (core, wire, native) loads no I/O module: I/O lives at the edges."""
    code = (
        "import sys, cellnet\n"
        "print(sorted(m for m in ('trio', 'ssl', 'socket') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_tensor_round_trip_through_top_level_names():
    import numpy as np

    buf = cellnet.encode_tensors({"w": np.arange(6, dtype=np.float32).reshape(2, 3)}, {"r": 1})
    pack = cellnet.decode_tensors(buf)
    assert pack.meta == {"r": 1}
    np.testing.assert_array_equal(pack["w"], np.arange(6, dtype=np.float32).reshape(2, 3))
