"""Stream errors: one branch of the cellnet exception tree, so callers can catch a failed stream."""

from __future__ import annotations

from cellnet.errors import (
    CellnetError,
    ChecksumError,
    LimitExceededError,
    LocalProtocolError,
    RemoteProtocolError,
)


class StreamError(CellnetError):
    """A stream failed; ``stream_id`` says which one (None when not known)."""

    def __init__(self, message: str, stream_id: int | None = None):
        super().__init__(message)
        self.stream_id = stream_id


class StreamResetError(StreamError):
    """The peer reset (cancelled or refused) the stream; ``reason`` is its text."""

    def __init__(self, message: str, stream_id: int | None = None, reason: str = ""):
        super().__init__(message, stream_id)
        self.reason = reason


class StreamCancelledError(StreamError):
    """This side cancelled the stream (or aborted it because its link was lost)."""


class StreamCorruptError(StreamError, ChecksumError):
    """A chunk, a tensor or the whole payload failed its CRC32C check."""


class StreamLimitError(StreamError, LimitExceededError):
    """A stream is over a configured limit (size, chunk, concurrent streams)."""


class StreamProtocolError(StreamError, RemoteProtocolError):
    """The peer broke the stream protocol (bad offset, credit overrun, unknown id)."""


class StreamUsageError(StreamError, LocalProtocolError, ValueError):
    """This side asked for something the stream protocol does not allow."""
