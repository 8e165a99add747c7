"""The job-scoped messenger (reference ``cmi``): requests between the job cells of one job.

``JobCellMessenger(engine, job_id).send_to_cell(targets, ...)`` addresses
*client names* (``site-1``, ``server``); the message goes to that
participant's job cell ``<name>.<job_id>``.  Every message carries the cmi
headers of the engine's session (client name, token, SSID, project, job id)
and the sender context's serialisable public props (``cmi.peer_props``).
Replies come back keyed by client name with reference return codes; a reply
whose own cmi headers fail the engine's :class:`SessionCheck` is turned
into an ``invalid_session``/``unauthenticated`` reply, as is a request on the
receiving side (:func:`guard`).

The engine is any object with ``cell`` (a running :class:`~cellnet.cell.Cell`),
``session`` (:class:`~cellnet.fl.runtime.session.Session`) and ``peer_check``
(a :class:`SessionCheck` or None to accept any peer).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from cellnet.defs import RC_TABLE, CellReturnCode, CMIHeader, FLContextKey, ReservedKey
from cellnet.errors import CellnetError
from cellnet.fl.dxo import DXO
from cellnet.fl.runtime.context import FLContext, peer_context_from_headers
from cellnet.fl.runtime.session import Verdict, cmi_headers
from cellnet.fqcn import validate_part
from cellnet.message import Message, MessageHeaderKey
from cellnet.requests import CELL_RC

__all__ = ["JobCellMessenger", "guard", "refusal"]

K = MessageHeaderKey


def refusal(verdict: Verdict, reference: bool = False) -> Message:
    """A reply refusing a message: the cell code (or its ``RC_TABLE`` value) and the reason."""
    code = RC_TABLE[verdict.code] if reference else verdict.code.value
    headers = {K.RETURN_CODE.value: str(code), K.ERROR.value: verdict.reason}
    if reference:
        headers[CELL_RC] = verdict.code.value
    return Message(headers)


def _payload(request: Any) -> Message:
    if isinstance(request, Message):
        return Message(dict(request.headers), request.payload)
    if isinstance(request, DXO):
        return Message({}, request.to_payload())
    return Message({}, request)


class JobCellMessenger:
    """Send to the job cells of ``job_id`` with cmi headers and session checks."""

    def __init__(self, engine: Any, job_id: str) -> None:
        self.engine = engine
        self.job_id = validate_part(job_id)

    def job_cell(self, client_name: str) -> str:
        """The FQCN of ``client_name``'s job cell for this job."""
        return f"{validate_part(client_name)}.{self.job_id}"

    def new_cmi_message(self, fl_ctx: FLContext | None, headers: dict | None = None,
                        payload: Any = None) -> Message:
        """A message with the cmi headers, the sender's peer props and ``headers``."""
        msg = _payload(payload)
        msg.headers.update(headers or {})
        msg.headers.update(cmi_headers(self.engine.session, self.job_id))
        if fl_ctx is not None:
            msg.headers[CMIHeader.HEADER_KEY_PEER_PROPS.value] = fl_ctx.peer_props()
        return msg

    async def send_to_cell(
        self,
        targets: str | Iterable[str],
        channel: str,
        topic: str,
        request: Any,
        timeout: float,
        fl_ctx: FLContext | None,
        bulk_send: bool = False,
        optional: bool = False,
    ) -> dict[str, Message]:
        """Send ``request`` to the job cells of ``targets``; ``{client name: reply}``.

        ``timeout == 0`` is fire-and-forget (returns ``{}``).  ``request`` is a
        Message, a DXO (sent as a tensor payload), bytes or None.
        """
        names = [targets] if isinstance(targets, str) else list(targets)
        fqcns = {self.job_cell(n): n for n in names}
        msg = self.new_cmi_message(fl_ctx, payload=request)
        replies = await self.engine.cell.send_to_cell(
            list(fqcns), channel, topic, msg, timeout, bulk_send=bulk_send, optional=optional
        )
        check = getattr(self.engine, "peer_check", None)
        out: dict[str, Message] = {}
        for fqcn, reply in replies.items():
            name = fqcns[fqcn]
            if check is not None and reply.get_header(CELL_RC) == CellReturnCode.OK:
                verdict = check.check(reply.headers)
                if verdict is None and reply.get_header(CMIHeader.HEADER_CLIENT_NAME) != name:
                    verdict = Verdict(CellReturnCode.AUTHENTICATION_ERROR,
                                      f"reply from {fqcn} names another client")
                if verdict is not None:
                    reply = refusal(verdict, reference=True)
            out[name] = reply
        return out


Handler = Callable[[Message, FLContext], Awaitable[Any]]


def guard(engine: Any, job_id: str, handler: Handler) -> Callable[[Message], Awaitable[Message]]:
    """A cell handler that checks the request's session, then runs ``handler(msg, fl_ctx)``.

    ``fl_ctx`` holds the job id, our client name, the engine (private) and the
    sender's peer context.
    The reply (whatever ``handler`` returns, as in ``register_request_cb``)
    carries our cmi headers.  A refused request gets ``invalid_session`` or
    ``authentication_error``; a bad peer context gets ``invalid_request``.
    """

    async def serve(msg: Message) -> Message:
        mine = cmi_headers(engine.session, job_id)
        check = engine.peer_check
        verdict = check.check(msg.headers) if check is not None else None
        if verdict is not None:
            reply = refusal(verdict)
            reply.headers.update(mine)
            return reply
        try:
            peer = peer_context_from_headers(msg.headers)
        except CellnetError as exc:
            return refusal(Verdict(CellReturnCode.INVALID_REQUEST, str(exc)))
        fl_ctx = FLContext()
        fl_ctx.set_prop(FLContextKey.CURRENT_JOB_ID, job_id, private=False)
        fl_ctx.set_prop(FLContextKey.CLIENT_NAME, engine.session.client_name, private=False)
        fl_ctx.set_prop(ReservedKey.ENGINE, engine)
        if peer is not None:
            fl_ctx.set_peer_context(peer)
        result = await handler(msg, fl_ctx)
        reply = result if isinstance(result, Message) else _payload(result)
        reply.headers.update(mine)
        return reply

    return serve
