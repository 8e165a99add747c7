"""CellNode: a Cell on the network from a startup kit -- listen, connect, re-connect, children.

Theory of operation
-------------------
A :class:`CellNode` wraps one :class:`~cellnet.cell.Cell` and one trio
nursery, and decides from its kit and FQCN what to do on the network:

* the **server** (server kit, FQCN = the server's name) listens on the kit's
  ``fl_port`` (or ``listen=``) and ``add_link``s every peer that passes the
  mutual-TLS and HELLO identity check under its verified FQCN;
* **every other cell** (a site, a job-like child such as ``site-1.J1``, an
  embedded agent such as ``site-1--probe``) has an *uplink*: its parent in the
  cell tree (the server for root names).  It connects with
  :func:`~cellnet.transport.connect_with_retry` (capped exponential backoff
  with full jitter, one log line per failed attempt), links, waits for the
  link's ``finished`` event, and connects again -- until the node stops.
  ``connect_timeout`` bounds each outage: when the uplink stays unreachable
  that long the node fails with :class:`~cellnet.errors.LinkError`.  An
  authentication refusal is never retried (it will not fix itself).
  ``reconnect=False`` (child cells) ends the node when its uplink is lost.
* **direct links** (on demand): a listening node publishes its address to
  the server, which keeps it only when ``allow_p2p`` is set there;
  :meth:`connect_peer` looks a target up and links straight to it (see
  :mod:`cellnet.node._p2p`);
* **child cells** run in child processes (:meth:`start_child`); they link to
  a listener on ``127.0.0.1`` that the node opens on first use, which accepts
  only the node's descendants (see :mod:`cellnet.node._children`).

Every node serves the built-ins of :mod:`cellnet.node._builtin` and writes
security events (``auth-accepted``, ``link-up``, ``link-down``,
``link-refused``, ``uplink-refused``) to the ``cellnet.audit`` logger.

A background failure (the uplink given up or refused) cancels the body of
``async with`` and is raised, unwrapped, when the block exits.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from collections.abc import Sequence
from functools import partial
from typing import Any

import trio

from cellnet import fqcn as _fqcn
from cellnet.cell import Cell
from cellnet.errors import AuthError, CellnetError, LinkError, RouteError, unwrap_group
from cellnet.link import LinkConfig
from cellnet.node import _children, _p2p
from cellnet.node._builtin import register_builtins
from cellnet.node._children import ChildCell
from cellnet.security import Kind, StartupKit
from cellnet.security.names import Identity, site_part
from cellnet.transport import Backoff, connect_with_retry, open_link_stream, serve_links
from cellnet.transport.tls import TLSStream
from cellnet.workspace import Workspace, audit

__all__ = ["CellNode"]

log = logging.getLogger("cellnet.node")
Address = tuple[str, int]
#: Seconds a stopping node waits for its child cells to end on their own (then: SIGTERM).
CHILD_EXIT_GRACE = 3.0


def _address(value: Any, what: str) -> Address:
    if not (isinstance(value, tuple | list) and len(value) == 2):
        raise TypeError(f"{what} must be a (host, port) pair, got {value!r}")
    host, port = value
    if not isinstance(host, str) or not host:
        raise ValueError(f"{what}: host must be a non-empty str, got {host!r}")
    if type(port) is not int or not 0 <= port <= 65535:
        raise ValueError(f"{what}: port must be an int in 0..65535, got {port!r}")
    return host, port


def _seconds(value: Any, what: str, *, allow_none: bool) -> float | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"{what} must be a positive number of seconds, got {value!r}")
    if math.isnan(value):
        raise ValueError(f"{what} must not be NaN")
    return float(value)




def _audit_refusal(address: str, exc: BaseException) -> None:
    """Audit a peer the transport refused (bad certificate, name, protocol or timeout)."""
    audit("auth-refused", address=address, error=type(exc).__name__, detail=str(exc))

class CellNode:
    """A cell on the network, built from a startup kit: ``async with CellNode(kit) as node:``.

    ``fqcn`` defaults to the kit's name; its site part must be the kit's
    name (``site-1``, ``site-1.J1`` and ``site-1--probe`` all run with
    site-1's kit).  ``listen`` is the ``(host, port)`` to accept links on
    (default: the kit's server address for the server, none otherwise; port
    0 picks a free one, see :attr:`address`).  ``connect`` is the uplink's
    address (default: the kit's server when the uplink is the server) and
    ``uplink`` its FQCN (default: the tree parent).  See the module docstring.
    """

    def __init__(
        self,
        kit: StartupKit | str | os.PathLike[str],
        fqcn: str | None = None,
        *,
        listen: Address | None = None,
        connect: Address | None = None,
        uplink: str | None = None,
        reconnect: bool = True,
        connect_timeout: float | None = None,
        backoff: Backoff | None = None,
        handshake_timeout: float = 10.0,
        link_config: LinkConfig | None = None,
        workspace: Workspace | str | os.PathLike[str] | None = None,
        verbose_children: bool = False,
        allow_p2p: bool = False,
    ) -> None:
        self.kit = kit if isinstance(kit, StartupKit) else StartupKit.load(kit)
        if self.kit.kind is Kind.ADMIN:
            raise ValueError(
                f"admin kit {self.kit.name!r} cannot run a cell (an admin name is not a cell "
                f"name); embed a cell with a site kit and an agent name such as 'site-1--me'"
            )
        self.fqcn = _fqcn.validate(fqcn if fqcn is not None else self.kit.name)
        if site_part(self.fqcn) != self.kit.name:
            raise ValueError(
                f"cell {self.fqcn!r} cannot run with the kit of {self.kit.name!r}: "
                f"its site part must be the kit's name"
            )
        server = self.kit.server
        is_root_server = self.kit.kind is Kind.SERVER and self.fqcn == server.name
        self._server_name = server.name
        if uplink is None and not is_root_server:
            up = _fqcn.tree_parent(self.fqcn)
            uplink = server.name if up in (None, _fqcn.SERVER) else up
        self.uplink = _fqcn.validate(uplink) if uplink is not None else None
        if self.uplink == self.fqcn:
            raise ValueError(f"cell {self.fqcn!r} cannot be its own uplink")
        if listen is None and is_root_server:
            listen = (server.host, server.fl_port)
        self.listen = _address(listen, "listen") if listen is not None else None
        if connect is None and self.uplink is not None:
            if self.uplink != server.name:
                raise ValueError(f"connect=(host, port) is needed to reach uplink {self.uplink!r}")
            connect = (server.host, server.fl_port)
        self.connect = _address(connect, "connect") if connect is not None else None
        self.reconnect = bool(reconnect)
        self.connect_timeout = _seconds(connect_timeout, "connect_timeout", allow_none=True)
        self.handshake_timeout = _seconds(handshake_timeout, "handshake_timeout", allow_none=False)
        if backoff is not None and not isinstance(backoff, Backoff):
            raise TypeError("backoff must be a cellnet.transport.Backoff")
        self._backoff = backoff if backoff is not None else Backoff(base=0.2, cap=10.0)
        if workspace is not None and not isinstance(workspace, Workspace):
            workspace = Workspace(workspace)
        self.workspace = workspace
        self.verbose_children = bool(verbose_children)
        self.cell = Cell(self.fqcn, parent=self.uplink, link_config=link_config)
        #: The server's endpoint registry for direct links (None on other cells).
        self.registry = (
            _p2p.EndpointRegistry(self.cell, allowed=bool(allow_p2p)) if is_root_server else None
        )
        #: ``(host, port)`` the node accepts links on, once running (None if it does not listen).
        self.address: Address | None = None
        self._child_address: Address | None = None
        self._child_lock = trio.Lock()
        self.children: dict[str, ChildCell] = {}
        self._stack: contextlib.AsyncExitStack | None = None
        self._nursery: trio.Nursery | None = None
        self._changed = trio.Event()
        self._failure: BaseException | None = None
        self._started = 0.0

    def __repr__(self) -> str:
        return f"<CellNode {self.fqcn} peers={list(self.cell.peers)}>"

    # ------------------------------------------------------------------ lifecycle
    async def __aenter__(self) -> CellNode:
        if self._stack is not None:
            raise RuntimeError(f"node {self.fqcn} is already running (or has run)")
        self._stack = stack = contextlib.AsyncExitStack()
        await stack.__aenter__()
        try:
            await stack.enter_async_context(self.cell)
            register_builtins(self.cell, self.info)
            if self.registry is not None:
                self.registry.register_handlers()
            self._started = trio.current_time()
            self._nursery = await stack.enter_async_context(trio.open_nursery())
            if self.listen is not None:
                host, port = self.listen
                self.address = await self._serve(host, port, children_only=False)
                log.info("cell %s listening on %s:%d", self.fqcn, *self.address)
            if self.uplink is not None:
                self._nursery.start_soon(self._uplink_loop)
        except BaseException as exc:
            if self._nursery is not None:
                self._nursery.cancel_scope.cancel()
            try:
                await stack.__aexit__(type(exc), exc, exc.__traceback__)
            except BaseException as group:
                if unwrap_group(group) is not exc:
                    raise
            raise
        return self

    async def __aexit__(self, *exc_info: Any) -> bool | None:
        assert self._stack is not None
        body_exc = exc_info[1]
        if self._nursery is not None and exc_info[0] is None and self._failure is None:
            try:
                await self._say_goodbye()
                await self._let_children_exit(CHILD_EXIT_GRACE)
            except trio.Cancelled as exc:  # stopped meanwhile (its uplink went away): the
                exc_info = (type(exc), exc, exc.__traceback__)  # nursery must still be closed
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()  # listeners, uplink, children (terminated)
        try:
            suppressed = await self._stack.__aexit__(*exc_info)
        except BaseException as group:
            if exc_info[1] is not None and unwrap_group(group) is exc_info[1]:
                if body_exc is None:
                    raise exc_info[1] from None  # a cancellation from outside, during the exit
                return False  # the body's own exception, unwrapped from the nurseries' groups
            raise
        finally:
            self._nursery = None
        if self._failure is not None:
            raise self._failure
        return suppressed if body_exc is not None else None

    async def _say_goodbye(self) -> None:
        """Tell every peer we are leaving (GOAWAY), so they see a reason rather than an EOF."""
        links = [self.cell.get_link(p) for p in self.cell.peers]
        with trio.move_on_after(1.0):
            async with trio.open_nursery() as nursery:
                for link in links:
                    if link is not None:
                        nursery.start_soon(link.goodbye, f"cell {self.fqcn} stopping")

    async def _let_children_exit(self, seconds: float) -> None:
        """Child cells end when their link does; wait for that before resorting to SIGTERM."""
        with trio.move_on_after(seconds):
            while any(c.returncode is None for c in self.children.values()):
                await self._changed.wait()

    def stop(self) -> None:
        """Stop the node's background work; the ``async with`` body is cancelled too."""
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    def _fail(self, exc: BaseException) -> None:
        if self._failure is None:
            self._failure = exc
        self.stop()

    def _running(self) -> trio.Nursery:
        if self._nursery is None:
            raise RuntimeError(f"node {self.fqcn} is not running (use 'async with node:')")
        return self._nursery

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    # ------------------------------------------------------------------ info
    def info(self) -> dict[str, Any]:
        """What the ``info`` built-in answers: who this cell is and whom it is linked to."""
        return {
            "fqcn": self.fqcn,
            "kit": self.kit.name,
            "kind": str(self.kit.kind),
            "org": self.kit.identity.org,
            "project": self.kit.project,
            "pid": os.getpid(),
            "peers": list(self.cell.peers),
            "uplink": self.uplink,
            "listening": f"{self.address[0]}:{self.address[1]}" if self.address else None,
            "child_address": "{}:{}".format(*self._child_address) if self._child_address else None,
            "children": {f: c.pid for f, c in self.children.items() if c.returncode is None},
            "uptime": trio.current_time() - self._started if self._started else 0.0,
        }

    @property
    def connected(self) -> bool:
        """True while the uplink (if any) is linked."""
        return self.uplink is None or self.uplink in self.cell.peers

    async def wait_for_peer(self, fqcn: str, timeout: float | None = None) -> None:
        """Wait until this cell has a live link to ``fqcn`` (``trio.TooSlowError`` on timeout)."""
        fqcn = _fqcn.validate(fqcn)
        with trio.fail_after(math.inf if timeout is None else timeout):
            while fqcn not in self.cell.peers:
                await self._changed.wait()

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Wait until the uplink is linked (returns at once for the server)."""
        if self.uplink is not None:
            await self.wait_for_peer(self.uplink, timeout)

    # ------------------------------------------------------------------ links
    async def _serve(self, host: str, port: int, *, children_only: bool) -> Address:
        handler = partial(self._on_peer, children_only=children_only)
        listeners = await self._running().start(
            partial(serve_links, handler, self.kit, host=host, port=port, my_fqcn=self.fqcn,
                    handshake_timeout=self.handshake_timeout, on_refused=_audit_refusal)
        )
        return tuple(listeners[0].socket.getsockname()[:2])  # type: ignore[return-value]

    async def _on_peer(
        self, stream: TLSStream, identity: Identity, fqcn: str, *, children_only: bool
    ) -> None:
        refusal = None
        if fqcn == self.fqcn:
            refusal = "the peer announced this cell's own name"
        elif children_only and not _fqcn.is_ancestor(self.fqcn, fqcn):
            refusal = f"only descendants of {self.fqcn} may use its child port"
        if refusal is not None:
            audit("link-refused", peer=fqcn, cn=identity.name, org=identity.org, reason=refusal)
            log.warning("refused link from %s (%s): %s", fqcn, identity.name, refusal)
            return
        audit("auth-accepted", peer=fqcn, cn=identity.name, org=identity.org, kind=identity.kind)
        await self._run_link(stream, fqcn, identity, "in")

    async def _run_link(self, stream: TLSStream, fqcn: str, identity: Identity, way: str) -> None:
        try:
            link = await self.cell.add_link(stream, fqcn)
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise
        audit("link-up", peer=fqcn, cn=identity.name, org=identity.org, direction=way)
        self._notify()
        try:
            await link.finished.wait()
        finally:
            reason = link.close_reason or f"cell {self.fqcn} stopping"
            audit("link-down", peer=fqcn, cn=identity.name, reason=reason)
            self._notify()

    async def _connect_uplink(self) -> Any:
        assert self.connect is not None and self.uplink is not None
        host, port = self.connect

        async def attempt() -> Any:
            return await open_link_stream(host, port, self.kit, my_fqcn=self.fqcn,
                                          expected_peer=self.uplink,
                                          timeout=self.handshake_timeout)

        def on_retry(n: int, exc: BaseException, delay: float) -> None:
            log.warning("cannot reach %s at %s:%d (attempt %d): %s; next attempt in %.1f s",
                        self.uplink, host, port, n, exc, delay)

        limit = self.connect_timeout
        try:
            with trio.fail_after(math.inf if limit is None else limit):
                return await connect_with_retry(attempt, backoff=self._backoff, on_retry=on_retry)
        except trio.TooSlowError:
            raise LinkError(
                f"gave up: {self.uplink} at {host}:{port} unreachable for {limit:g} s "
                f"(--connect-timeout)"
            ) from None

    async def _uplink_loop(self) -> None:
        while True:
            try:
                peer = await self._connect_uplink()
            except AuthError as exc:
                audit("uplink-refused", peer=self.uplink, error=f"{type(exc).__name__}: {exc}")
                log.error("link to %s refused: %s", self.uplink, exc)
                self._fail(exc)
                return
            except CellnetError as exc:
                log.error("giving up on %s: %s", self.uplink, exc)
                self._fail(exc)
                return
            self._backoff.reset()
            log.info("linked to %s at %s:%d", peer.fqcn, *self.connect)  # type: ignore[str-format]
            if self.address is not None and self.uplink == self._server_name:
                self._running().start_soon(self._publish_endpoint)
            await self._run_link(peer.stream, peer.fqcn, peer.identity, "out")
            if not self.reconnect:
                log.info("link to %s lost; cell %s stops", self.uplink, self.fqcn)
                self.stop()
                return
            log.warning("link to %s lost; reconnecting", self.uplink)

    # ------------------------------------------------------------------ direct links
    async def _publish_endpoint(self) -> None:
        """Tell the server where this cell accepts direct links (it may decline)."""
        try:
            accepted = await _p2p.register(self.cell, self._server_name, self.address,
                                           self.handshake_timeout)
        except CellnetError as exc:
            log.warning("could not publish the direct-link endpoint: %s", exc)
            return
        if accepted:
            log.info("direct links to %s accepted on %s:%d", self.fqcn, *self.address)

    async def connect_peer(self, target: str, *, timeout: float = 10.0) -> str:
        """Open a direct link toward ``target`` (on demand); return the peer linked to.

        The server names the cell on the target's path that accepts direct
        links (the target or an ancestor, e.g. its site), if its policy allows;
        the link is an ordinary mutual-TLS link with the usual identity check,
        and routing prefers it from then on.  If that peer is already linked,
        nothing is opened.  Raises RouteError (refused / no endpoint),
        AuthError or LinkError (cannot connect).  The link is not re-opened
        when it drops: traffic falls back to the server's route.
        """
        target = _fqcn.validate(target)
        if self.uplink is None:
            raise RouteError("the server has no uplink to ask for an endpoint")
        with trio.fail_after(timeout):
            name, host, port = await _p2p.lookup(self.cell, self._server_name, target, timeout)
            if name == self.fqcn:
                raise RouteError(f"{target} is behind this cell already")
            if name in self.cell.peers:
                return name
            peer = await open_link_stream(host, port, self.kit, my_fqcn=self.fqcn,
                                          expected_peer=name, timeout=self.handshake_timeout)
            self._running().start_soon(
                self._run_link, peer.stream, peer.fqcn, peer.identity, "direct"
            )
            while name not in self.cell.peers:
                await self._changed.wait()
        log.info("direct link to %s open (for %s)", name, target)
        return name

    # ------------------------------------------------------------------ children
    async def child_address(self) -> Address:
        """The local ``(host, port)`` child cells link to; opened on first use."""
        async with self._child_lock:
            if self._child_address is None:
                self._child_address = await self._serve("127.0.0.1", 0, children_only=True)
                log.info("cell %s accepts child cells on %s:%d", self.fqcn, *self._child_address)
        return self._child_address

    async def start_child(
        self, name: str, argv: Sequence[str] | None = None, *, timeout: float | None = 30.0
    ) -> ChildCell:
        """Run child cell ``<fqcn>.<name>`` in a child process and wait until it has linked.

        Without ``argv`` the child is ``python -m cellnet.run --child`` (a
        cell with the built-ins; its workspace is ``<workspace>/<name>``).
        With ``argv`` that program is run with the environment variables of
        :mod:`cellnet.node._children`, and should build its node with
        :meth:`from_child_env`.  ``timeout=None`` returns without waiting.
        The child is terminated when this node stops.
        """
        nursery = self._running()
        fqcn = _fqcn.join([*_fqcn.split(self.fqcn), _fqcn.validate_part(name)])
        old = self.children.get(fqcn)
        if old is not None and old.returncode is None:
            raise ValueError(f"child cell {fqcn} is already running (pid {old.pid})")
        _, port = await self.child_address()
        if argv is None:
            ws = self.workspace.subdir(name).root if self.workspace is not None else None
            argv = _children.child_argv(self.kit.path, fqcn, port, workspace=ws,
                                        verbose=self.verbose_children)
        child = await _children.spawn(argv, _children.child_env(self.kit.path, fqcn, port), fqcn)
        self.children[fqcn] = child
        nursery.start_soon(self._supervise, child)
        if timeout is not None:
            with trio.fail_after(timeout):
                while fqcn not in self.cell.peers:
                    if child.returncode is not None:
                        raise LinkError(
                            f"child cell {fqcn} exited (status {child.returncode}) before linking"
                        )
                    await self._changed.wait()
        return child

    async def _supervise(self, child: ChildCell) -> None:
        try:
            await _children.supervise(child)
        finally:
            self._notify()

    @classmethod
    def from_child_env(cls, env: dict[str, str] | None = None, **kwargs: Any) -> CellNode:
        """The node of a child program started by :meth:`start_child` with its own ``argv``."""
        env = dict(os.environ if env is None else env)
        names = (_children.ENV_KIT, _children.ENV_FQCN, _children.ENV_HOST, _children.ENV_PORT)
        missing = [n for n in names if not env.get(n)]
        if missing:
            raise ValueError(f"not started as a child cell: {', '.join(missing)} not set")
        try:
            port = int(env[_children.ENV_PORT])
        except ValueError:
            bad = env[_children.ENV_PORT]
            raise ValueError(f"{_children.ENV_PORT} is not a port: {bad!r}") from None
        kwargs.setdefault("reconnect", False)
        return cls(env[_children.ENV_KIT], env[_children.ENV_FQCN],
                   connect=(env[_children.ENV_HOST], port), **kwargs)
