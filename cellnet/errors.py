"""The one exception tree of cellnet, rooted at :class:`CellnetError`.

Errors that describe bad input also derive from the matching builtin
(``ValueError``/``TypeError``) so callers that only know Python's types can
still catch them.
"""

from __future__ import annotations


def unwrap_group(exc: BaseException) -> BaseException:
    """The single exception inside (nested) one-member exception groups, else ``exc``.

    trio nurseries wrap a failure in groups; entry points use this to report
    (and classify) the error that actually happened.
    """
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


class CellnetError(Exception):
    """Base of every error cellnet raises on purpose."""


class NativeBuildError(CellnetError, ImportError):
    """The compiled core is missing or does not match this Python package."""


class NativeError(CellnetError):
    """A native call failed; ``status`` is the negative ``CN_E_*`` code."""

    def __init__(self, message: str, status: int = 0):
        super().__init__(message)
        self.status = status


class InvalidArgumentError(NativeError, ValueError):
    """A parameter was out of its domain (e.g. a non-positive block size)."""


class BufferTooSmallError(NativeError, ValueError):
    """A caller-supplied output buffer is smaller than the operation needs."""


class CorruptDataError(NativeError, ValueError):
    """Encoded input is malformed: truncated, bad layout or bad ranges."""


class TruncatedError(CorruptDataError):
    """Encoded input ends before its own header says it should."""


class ChecksumError(CorruptDataError):
    """A checksum over encoded data does not match."""


class UnsupportedVersionError(CorruptDataError):
    """Encoded input carries a format version this build does not know."""


class LimitExceededError(CellnetError, ValueError):
    """Input exceeds a configured limit (size, count, depth)."""


class DTypeError(NativeError, TypeError):
    """An array's dtype is not supported by the operation, or dtypes disagree."""


class ShapeError(NativeError, ValueError):
    """Arrays that must agree in shape or size do not."""


class FQCNError(CellnetError, ValueError):
    """A fully qualified cell name is malformed."""


class ProtocolError(CellnetError):
    """The wire protocol was violated."""


class LocalProtocolError(ProtocolError):
    """We were asked to send something the protocol does not allow."""


class RemoteProtocolError(ProtocolError):
    """The peer sent bytes that break the protocol (the link must close)."""


class FrameChecksumError(RemoteProtocolError, ChecksumError):
    """A received frame's checksum does not match its bytes."""


class FrameTooLargeError(RemoteProtocolError, LimitExceededError):
    """A received frame declares a length above the configured limit."""


class ProvisionError(CellnetError, ValueError):
    """A project file, an output directory or a startup kit is invalid or inconsistent."""


class AuthError(CellnetError):
    """A peer could not be authenticated; subclasses say which check failed.

    ``verify_code`` is OpenSSL's verification code when one is known and
    ``by_peer`` is true when the *peer* rejected *our* certificate.
    """

    def __init__(self, message: str, *, verify_code: int | None = None, by_peer: bool = False):
        super().__init__(message)
        self.verify_code = verify_code
        self.by_peer = by_peer


class CertificateExpiredError(AuthError):
    """A certificate's validity ended before now."""


class CertificateNotYetValidError(AuthError):
    """A certificate's validity starts after now (often a clock problem)."""


class UnknownCAError(AuthError):
    """A certificate was not issued by this project's CA."""


class MissingCertificateError(AuthError):
    """The peer presented no certificate although mutual TLS requires one."""


class IdentityMismatchError(AuthError):
    """The name (or kind) a peer announces is not the one its certificate carries."""


class FrameFormatError(RemoteProtocolError):
    """A received frame has a bad magic, an unknown version or type, or reserved bits set."""


class RouteError(CellnetError):
    """No route leads to a target cell, or a message ran out of hops."""


class LinkClosedError(CellnetError):
    """The link a message was to travel over is closed (or closed while it waited)."""


class LinkBusyError(CellnetError):
    """A link's send queue stayed full for longer than the sender agreed to wait."""


class LinkError(CellnetError, ConnectionError):
    """A link to a peer could not be set up: unreachable, refused, or too slow to answer."""


class JobError(CellnetError):
    """A job operation failed: unknown job, illegal status change, or a store problem."""


class JobValidationError(JobError, ValueError):
    """A job folder, meta or job archive is invalid; ``problems`` lists every issue found."""

    def __init__(self, message: str, problems: list[str] | None = None):
        self.problems = list(problems) if problems else [message]
        if problems:
            lines = "\n".join(f"  - {p}" for p in self.problems)
            message = f"{message} ({len(self.problems)} problem(s)):\n{lines}"
        super().__init__(message)


class JobNotFoundError(JobError, LookupError):
    """No job with the given id is in the job store."""


class SubmitConflictError(JobError):
    """A submit token was reused for different job content (or for a deleted job)."""


class IllegalTransitionError(JobError):
    """A job status change that the RunStatus lifecycle does not allow."""


class FilterError(CellnetError, ValueError):
    """A DXO filter cannot process its input (wrong kind, inconsistent meta, bad values)."""


class FilterConfigError(FilterError):
    """A filter spec names no known filter or carries arguments the filter rejects."""


class AggregationError(CellnetError, ValueError):
    """An aggregator rejected a contribution (wrong kind, names, shapes) or has no result."""


class DuplicateContributionError(AggregationError):
    """A contributor sent a second contribution in the same round."""
