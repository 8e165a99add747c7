"""TLSStream: TLS over a trio stream, driven by hand through ``ssl.MemoryBIO`` for bulk speed.

Theory of operation.  An ``ssl.SSLObject`` sits between two memory BIOs:
ciphertext read from the socket is written into *incoming*, OpenSSL decrypts
it into the caller's buffer; plaintext we write is encrypted into *outgoing*,
whose bytes we then push to the socket.  Stock ``trio.SSLStream`` does the
same but with small reads and one SSL call per receive, which leaves it at a
third of the machine's TLS ceiling (``CEILINGS.md``).  Here:

* the receive side reads up to ``read_size`` (1 MiB) of ciphertext at a time
  into one reused buffer, feeds it to *incoming*, and then decrypts every
  buffered record straight into the caller's buffer (``receive_into``), so one
  socket read and one Python-level loop carry a whole megabyte;
* the send side encrypts in ``write_size`` pieces and writes *outgoing* to the
  socket once per ``flush_size`` bytes and once at the end, so a list of
  segments (``send_segments``) leaves in as few socket writes as possible.

Latency: over a trio socket, an uncontended send or receive first tries the
non-blocking stdlib socket directly and waits (``wait_readable`` /
``wait_writable``) only when it would block, so each call is exactly one
checkpoint instead of a lock's plus a socket call's; and
:meth:`TLSStream.send_segments_nowait` writes a small frame without yielding
at all, for a caller that reaches its own checkpoint next.

Concurrency: one sending and one receiving task may use the stream at the
same time (two at once on the same side is a ``trio.BusyResourceError``).
The SSLObject itself is only touched synchronously, so it needs no lock; the
two transport directions each have one.  Outgoing bytes are taken from the
BIO only while the send lock is held, so records reach the socket in the
order OpenSSL produced them even when the receive path has something to send
(post-handshake messages).  A side that needs peer bytes it cannot get on its
own (``SSLWantReadError`` while writing or during the handshake) reads from
the socket under the receive lock, and skips its read if another task read
while it waited -- the scheme of ``trio.SSLStream``.

Bytes taken from *outgoing* but not yet written stay in ``_unsent`` and go out
first on the next flush, so a cancelled ``send_all`` never tears a record
(over a trio socket; over any other transport a cancelled flush breaks the
stream, as in trio).

Errors: handshake failures become the typed :class:`~cellnet.errors.AuthError`
of :func:`~cellnet.security.classify_ssl_error` (also when a certificate
rejection only reaches us with the first record after the handshake, as TLS
1.3 clients see it); a transport failure, or the peer closing without a TLS
close_notify (mid-record or not), is ``trio.BrokenResourceError``; use after
:meth:`aclose` is ``trio.ClosedResourceError``.
"""

from __future__ import annotations

import contextlib
import errno
import socket
import ssl
from collections.abc import Iterable
from typing import Any

import trio

from cellnet.security import classify_ssl_error
from cellnet.transport._tls_helpers import _auth_failure, _byte_view, _Conflict

__all__ = ["TLSStream"]

#: Longest a read waits, shielded, to send the TLS answer (e.g. KeyUpdate) it produced.
_FLUSH_AFTER_READ_S = 10.0

MiB = 1 << 20
READ_SIZE = 1 * MiB
WRITE_SIZE = 512 * 1024
FLUSH_SIZE = 1 * MiB

_OK, _BROKEN, _CLOSED = "ok", "broken", "closed"
_wait_readable = trio.lowlevel.wait_readable
_PLAIN = (bytes, bytearray)


class TLSStream(trio.abc.Stream):
    """A TLS 1.3 stream over ``transport_stream`` (fast path for ``trio.SocketStream``).

    ``ssl_context`` comes from :func:`cellnet.security.server_context` or
    :func:`~cellnet.security.client_context`.  The handshake runs on the
    first send or receive, or explicitly with :meth:`do_handshake`.
    """

    def __init__(
        self,
        transport_stream: trio.abc.Stream,
        ssl_context: ssl.SSLContext,
        *,
        server_side: bool = False,
        server_hostname: str | None = None,
        read_size: int = READ_SIZE,
        write_size: int = WRITE_SIZE,
        flush_size: int = FLUSH_SIZE,
    ) -> None:
        for name, value in (("read_size", read_size), ("write_size", write_size),
                            ("flush_size", flush_size)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        self.transport_stream = transport_stream
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._ssl = ssl_context.wrap_bio(
            self._incoming, self._outgoing, server_side=server_side,
            server_hostname=server_hostname,
        )
        sock = transport_stream.socket if isinstance(transport_stream, trio.SocketStream) else None
        # the stdlib socket under trio's (non-blocking), used directly: an uncontended send or
        # receive tries it at once and waits on it only when it would block (one checkpoint)
        raw = getattr(sock, "_sock", None)
        self._raw = raw if isinstance(raw, socket.socket) else None
        self._rview = memoryview(bytearray(read_size)) if self._raw is not None else None
        self._drained = False  # the last read emptied the socket
        self._read_size = read_size
        self._write_size = write_size
        self._flush_size = flush_size
        self._state = _OK
        self._eof = False
        self._handshook = False
        self._handshake_error: BaseException | None = None
        self._pending_exc: BaseException | None = None
        self._unsent = memoryview(b"")
        self._reads = 0
        self._send_lock = trio.StrictFIFOLock()
        # a lock that is not tied to its holder (trio.Lock registers and unregisters the owner
        # on every acquire, which costs more than the uncontended read it guards)
        self._recv_lock = trio.Semaphore(1, max_value=1)
        self._handshake_lock = trio.Lock()
        self._send_conflict = _Conflict("another task is sending on this TLSStream")
        self._recv_conflict = _Conflict("another task is receiving on this TLSStream")

    # ---- introspection -------------------------------------------------

    @property
    def ssl_object(self) -> ssl.SSLObject:
        """The underlying ``SSLObject`` (for ``getpeercert``, ``version``, ``cipher``)."""
        return self._ssl

    def getpeercert(self, binary_form: bool = False) -> Any:
        return self._ssl.getpeercert(binary_form)

    # ---- state ---------------------------------------------------------

    def _check(self) -> None:
        if self._state is _CLOSED:
            raise trio.ClosedResourceError("this TLSStream was closed")
        if self._state is _BROKEN:
            raise trio.BrokenResourceError("this TLSStream is broken") from self._handshake_error

    def _break(self) -> None:
        if self._state is _OK:
            self._state = _BROKEN

    def _transport_error(self, exc: OSError) -> Exception:
        if self._state is _CLOSED or exc.errno == errno.EBADF:
            return trio.ClosedResourceError("this TLSStream was closed")
        self._break()
        return trio.BrokenResourceError(f"transport failed: {exc}")

    # ---- transport I/O -------------------------------------------------

    async def _flush(self) -> None:
        """Write everything in the outgoing BIO (and any leftover) to the transport."""
        if self._raw is None:
            async with self._send_lock:
                await self._flush_stream()
            return
        if not self._send_lock.locked():
            await trio.lowlevel.checkpoint_if_cancelled()
            # synchronous, so no other task can write in between: the lock is not needed
            if self._write_out():
                await trio.lowlevel.cancel_shielded_checkpoint()
                return
        async with self._send_lock:
            while not self._write_out():
                await self._wait_writable()

    def _write_out(self) -> bool:
        """Write outgoing ciphertext while the socket takes it, synchronously; True: all out."""
        send = self._raw.send  # type: ignore[union-attr]
        outgoing = self._outgoing
        while True:
            if not self._unsent:
                if not outgoing.pending:
                    return True
                data = outgoing.read()
                try:
                    sent = send(data)
                except BlockingIOError:
                    self._unsent = memoryview(data)
                    return False
                except OSError as exc:
                    self._unsent = memoryview(data)
                    raise self._transport_error(exc) from exc
                if sent < len(data):
                    self._unsent = memoryview(data)[sent:]
                continue
            try:
                sent = send(self._unsent)
            except BlockingIOError:
                return False
            except OSError as exc:
                raise self._transport_error(exc) from exc
            self._unsent = self._unsent[sent:]

    async def _wait_writable(self) -> None:
        try:
            await trio.lowlevel.wait_writable(self._raw)
        except trio.ClosedResourceError:
            self._check()
            raise

    async def _flush_stream(self) -> None:
        while self._outgoing.pending:
            data = self._outgoing.read()
            try:
                await self.transport_stream.send_all(data)
            except trio.ClosedResourceError:
                self._check()
                raise
            except BaseException:
                self._break()  # we cannot tell how much of ``data`` went out
                raise

    async def _read_transport(self) -> None:
        """Read one chunk of ciphertext into the incoming BIO (EOF -> ``write_eof``); when
        uncontended, exactly one checkpoint (the wait, or one after an instant read)."""
        if self._raw is not None and self._recv_lock.value:
            await trio.lowlevel.checkpoint_if_cancelled()
            self._recv_lock.acquire_nowait()
            try:
                waited = await self._read_raw()
            finally:
                self._recv_lock.release()
            if not waited:
                await trio.lowlevel.cancel_shielded_checkpoint()
            return
        seen = self._reads
        async with self._recv_lock:
            if seen != self._reads or self._incoming.eof:  # someone read while we waited
                await trio.lowlevel.checkpoint()
                return
            if self._raw is not None:
                await self._read_raw()
                return
            try:
                data = await self.transport_stream.receive_some(self._read_size)
            except trio.BrokenResourceError:
                self._break()
                raise
            except trio.ClosedResourceError:
                self._check()
                raise
            if data:
                self._incoming.write(data)
            else:
                self._incoming.write_eof()
            self._reads += 1

    async def _read_raw(self) -> bool:
        """One read from the stdlib socket, waiting if it has nothing (receive lock held); True
        if it waited.  If the last read emptied the socket, wait first: spares a failing recv."""
        raw = self._raw
        assert raw is not None and self._rview is not None
        waited = self._drained
        while True:
            if waited:
                try:
                    await _wait_readable(raw)
                except trio.ClosedResourceError:
                    self._check()
                    raise
            try:
                n = raw.recv_into(self._rview)
                break
            except BlockingIOError:
                waited = True
            except OSError as exc:
                raise self._transport_error(exc) from exc
        self._drained = 0 < n < self._read_size
        if n:
            self._incoming.write(self._rview[:n])
        else:
            self._incoming.write_eof()
        self._reads += 1
        return waited

    # ---- handshake -----------------------------------------------------

    async def do_handshake(self) -> None:
        """Run the TLS handshake now (idempotent; also safe from both tasks at once)."""
        self._check()
        await self._ensure_handshake()
        await trio.lowlevel.checkpoint()

    async def _ensure_handshake(self) -> None:
        if self._handshook:
            return
        async with self._handshake_lock:
            if self._handshook:
                return
            self._check()
            try:
                await self._handshake()
            except BaseException as exc:
                self._break()
                self._handshake_error = exc
                raise
            self._handshook = True

    async def _handshake(self) -> None:
        while True:
            try:
                self._ssl.do_handshake()
                want_read = False
            except ssl.SSLWantReadError:
                want_read = True
            except ssl.SSLError as exc:
                self._break()
                with trio.move_on_after(1), contextlib.suppress(  # let the peer see our alert
                    trio.BrokenResourceError, trio.ClosedResourceError
                ):
                    await self._flush()
                if isinstance(exc, ssl.SSLEOFError):
                    msg = "the peer closed during the TLS handshake"
                    raise trio.BrokenResourceError(msg) from exc
                raise classify_ssl_error(exc) from exc
            await self._flush()
            if not want_read:
                return
            await self._read_transport()

    # ---- receiving -----------------------------------------------------

    def _decrypt_into(self, view: memoryview) -> int:
        """Decrypt every buffered record that fits into ``view``; the byte count."""
        if self._pending_exc is not None:
            exc, self._pending_exc = self._pending_exc, None
            raise exc
        n, total, read = 0, len(view), self._ssl.read
        incoming, pending = self._incoming, self._ssl.pending
        try:
            while n < total:
                got = read(total - n, view[n:])
                if not got:  # close_notify received: Python reports it as a 0-byte read
                    self._eof = True
                    break
                n += got
                if not incoming.pending and not pending():
                    break  # all taken: spare the read that would raise SSLWantReadError
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLZeroReturnError:
            self._eof = True
        except ssl.SSLError as exc:
            err = self._read_failed(exc)
            err.__cause__ = exc
            if not n:
                raise err from exc
            self._pending_exc = err
        return n

    async def receive_into(self, buffer: Any) -> int:
        """Receive decrypted bytes into ``buffer``; the count, 0 at a clean end of stream."""
        view = _byte_view(buffer, "buffer")
        if view.readonly:
            raise TypeError("buffer must be writable")
        if not len(view):
            raise ValueError("buffer must not be empty")
        return await self._receive_into(view, checkpointed=False)

    async def _receive_into(self, view: memoryview, *, checkpointed: bool) -> int:
        """Cancel-safe: a cancellation can only land before any byte is taken from the stream
        (``checkpoint_if_cancelled`` first, or the transport wait); once bytes are decrypted
        into ``view`` the call completes (its schedule point is shielded)."""
        with self._recv_conflict:
            self._check()
            await self._ensure_handshake()
            if not checkpointed:
                await trio.lowlevel.checkpoint_if_cancelled()  # cancelled: nothing consumed
            while True:
                if self._eof:
                    n = 0
                    break
                n = self._decrypt_into(view)
                if n or self._eof:
                    break
                self._check()
                if self._incoming.eof:  # defensive: OpenSSL reports this as SSLEOFError
                    self._break()
                    raise trio.BrokenResourceError("the peer closed the connection mid-stream")
                await self._read_transport()
                checkpointed = True
            # bytes are in ``view`` now: nothing below may be cancelled, or they would be lost
            if self._outgoing.pending and not self._send_lock.locked():
                await self._flush_answer()
            if not checkpointed:
                await trio.lowlevel.cancel_shielded_checkpoint()
            return n

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        """Up to ``max_bytes`` (default: all that is buffered, at least one read) bytes."""
        if max_bytes is not None and (type(max_bytes) is not int or max_bytes < 1):
            if not isinstance(max_bytes, int) or isinstance(max_bytes, bool):
                raise TypeError("max_bytes must be an int or None")
            if max_bytes < 1:
                raise ValueError("max_bytes must be >= 1")
        limit = max_bytes or self._read_size
        if self._handshook and self._raw is not None and self._recv_lock.value:
            data = await self._receive_records(limit)
            if data is not None:
                return data
        read = False
        with self._recv_conflict:
            self._check()
            await self._ensure_handshake()
            while not (self._eof or self._incoming.eof or self._buffered() or self._pending_exc):
                await self._read_transport()
                read = True
        # every buffered record fits: incoming ciphertext is at least as long as its plaintext
        size = min(limit, max(1, self._buffered()))
        buf = bytearray(size)
        n = await self._receive_into(memoryview(buf), checkpointed=read)
        del buf[n:]
        return buf

    async def _receive_records(self, limit: int) -> bytes | None:
        """``receive_some``'s common case over a socket: whole records decrypted as ``bytes``
        (one OpenSSL call for a lone record, no buffer to allocate and trim); None, having
        taken nothing, when the general path must decide (end of stream, an error pending,
        a record not yet complete)."""
        incoming, sslobj = self._incoming, self._ssl
        with self._recv_conflict:
            self._check()
            waited = False
            if not (incoming.pending or sslobj.pending()):
                if self._eof or incoming.eof or self._pending_exc is not None:
                    return None
                lock = self._recv_lock
                lock.acquire_nowait()
                try:
                    waited = await self._read_raw()
                finally:
                    lock.release()
            if not waited:  # (a wait is this call's checkpoint; else take one before reading)
                await trio.lowlevel.checkpoint_if_cancelled()  # cancelled: nothing taken
            try:
                data = sslobj.read(limit)
            except ssl.SSLWantReadError:
                return None  # only part of a record is here: nothing was taken
            except ssl.SSLZeroReturnError:
                self._eof = True
                data = b""
            except ssl.SSLError as exc:
                raise self._read_failed(exc) from exc
            if not data:  # close_notify, reported as a 0-byte read
                self._eof = True
            elif len(data) < limit and (incoming.pending or sslobj.pending()):
                data = self._more_records(data, limit)
            # bytes are taken now: nothing below may be cancelled, or they would be lost
            if self._outgoing.pending and not self._send_lock.locked():
                await self._flush_answer()
            if not waited:
                await trio.lowlevel.cancel_shielded_checkpoint()
            return data

    async def _flush_answer(self) -> None:
        """Send what reading produced (a key-update answer), shielded: the bytes just read
        must reach the caller, so this may not be cancelled."""
        with trio.CancelScope(shield=True) as shield:
            shield.deadline = trio.current_time() + _FLUSH_AFTER_READ_S
            await self._flush()

    def _more_records(self, first: bytes, limit: int) -> bytes:
        """``first`` and the plaintext of the records buffered behind it, up to ``limit``."""
        parts, n = [first], len(first)
        incoming, sslobj = self._incoming, self._ssl
        try:
            while n < limit and (incoming.pending or sslobj.pending()):
                more = sslobj.read(limit - n)
                if not more:
                    self._eof = True
                    break
                parts.append(more)
                n += len(more)
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLZeroReturnError:
            self._eof = True
        except ssl.SSLError as exc:  # reported by the next receive, after these bytes
            self._pending_exc = self._read_failed(exc)
            self._pending_exc.__cause__ = exc
        return b"".join(parts)

    def _read_failed(self, exc: ssl.SSLError) -> BaseException:
        """The error a failed decrypt becomes (the stream is broken from now on)."""
        self._break()
        auth = _auth_failure(exc) if not isinstance(exc, ssl.SSLEOFError) else None
        return auth or trio.BrokenResourceError(f"TLS stream failed: {exc}")

    def _buffered(self) -> int:
        return self._ssl.pending() + self._incoming.pending

    # ---- sending -------------------------------------------------------

    async def send_all(self, data: Any) -> None:
        """Encrypt and send all of ``data``."""
        await self.send_segments((data,))

    async def send_segments(self, segments: Iterable[Any]) -> None:
        """Encrypt the buffers of ``segments`` back to back, with as few socket writes as can be."""
        views = [_byte_view(seg, "segment") for seg in segments]
        with self._send_conflict:
            self._check()
            await trio.lowlevel.checkpoint_if_cancelled()  # cancelled: nothing is encrypted
            await self._ensure_handshake()
            if not any(len(v) for v in views):
                await self._flush()  # writes what an earlier send_segments_nowait left over
                return
            step, flush_at, write = self._write_size, self._flush_size, self._ssl.write
            for view in views:
                off, size = 0, len(view)
                while off < size:
                    self._check()
                    try:
                        off += write(view[off : off + step])
                    except ssl.SSLWantReadError:
                        await self._flush()
                        await self._read_transport()
                        continue
                    except ssl.SSLError as exc:
                        self._break()
                        raise trio.BrokenResourceError(f"TLS stream failed: {exc}") from exc
                    if self._outgoing.pending >= flush_at:
                        await self._flush()
            await self._flush()

    def send_segments_nowait(self, segments: Iterable[Any]) -> bool:
        """Encrypt ``segments`` and write them to the socket now, without waiting or yielding.

        For a small frame on an idle link, this saves the writer task's hop.
        Raises ``trio.WouldBlock``, having changed nothing, unless the stream
        runs over a trio socket, is handshaken, and no other send is in progress
        or unfinished.  True: the socket took everything; False: ciphertext is
        left over and the next send (``send_all(b"")`` will do) writes it first.
        Not a checkpoint -- the caller must reach one itself.
        """
        if (self._raw is None or not self._handshook or self._unsent or self._outgoing.pending
                or self._send_lock.locked() or self._send_conflict._busy):
            raise trio.WouldBlock
        if type(segments) is list and len(segments) == 1 and type(segments[0]) in _PLAIN:
            views = segments  # one plain buffer (a link's small frame): nothing to check
        else:
            views = [_byte_view(seg, "segment") for seg in segments]
        self._check()
        step, write = self._write_size, self._ssl.write
        try:
            for view in views:  # synchronous throughout: no lock needed
                size = len(view)
                off = write(view) if 0 < size <= step else 0  # a small one: no slice
                while off < size:
                    off += write(view[off : off + step])
        except ssl.SSLError as exc:  # incl. WantRead: TLS 1.3 never renegotiates
            self._break()
            raise trio.BrokenResourceError(f"TLS stream failed: {exc}") from exc
        return self._write_out()

    async def wait_send_all_might_not_block(self) -> None:
        with self._send_conflict:
            self._check()
            async with self._send_lock:
                if self._raw is not None:
                    await self._wait_writable()
                else:
                    await self.transport_stream.wait_send_all_might_not_block()

    # ---- closing -------------------------------------------------------

    async def aclose(self) -> None:
        """Send close_notify if we can do so without waiting on a busy sender, then close."""
        if self._state is _CLOSED:
            await trio.lowlevel.checkpoint()
            return
        was_ok = self._state is _OK and self._handshook
        self._state = _CLOSED
        try:
            if was_ok and not self._send_lock.locked():
                try:
                    self._ssl.unwrap()
                except ssl.SSLError:
                    pass  # SSLWantReadError: close_notify queued, the peer's not awaited
                try:
                    with trio.move_on_after(1):
                        await self._flush()
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass
        finally:
            await self.transport_stream.aclose()
