"""Job reports: what a job cell tells the server about its job (status, results, errors)."""

from __future__ import annotations

import logging
from typing import Any

from cellnet.fl.runtime import _proto as P
from cellnet.fl.runtime.session import SERVER_CLIENT, cmi_headers
from cellnet.message import Message

__all__ = ["report_to_server"]

log = logging.getLogger("cellnet.fl.job_cell")


async def report_to_server(engine: Any, doc: dict[str, Any], timeout: float = 10.0) -> None:
    """Send ``doc`` (job id, status, error, results...) to the server as a JOB_REPORT; a
    refusal is logged, not raised (the job cell is usually ending anyway)."""
    msg = Message(cmi_headers(engine.session, engine.job_id), P.dumps(doc))
    reply = await engine.cell.send_request(SERVER_CLIENT, P.RUNTIME_CHANNEL,
                                           P.RuntimeTopic.JOB_REPORT, msg, timeout)
    if reply.return_code != "ok":
        log.error("the server did not take the job report: %s", reply.error)
