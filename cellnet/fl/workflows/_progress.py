"""Progress of a running workflow, sent to the server runner (``job_progress``) for ``simulate``.

A workflow calls :func:`report_progress` with a small JSON-able dict (rounds
done, sites answered, latest metrics); the server job cell sends it to the
server, fire-and-forget, and the server keeps the latest one per job for
:meth:`~cellnet.fl.runtime.JobClient.get_progress`.  Reporting never fails the
workflow: an engine without a cell, or a lost message, only costs a log line.
"""

from __future__ import annotations

import logging
from typing import Any

from cellnet.fl.runtime import _proto as P
from cellnet.fl.runtime.session import SERVER_CLIENT, cmi_headers
from cellnet.message import Message

__all__ = ["report_progress"]

log = logging.getLogger("cellnet.fl.workflows")


async def report_progress(engine: Any, doc: dict[str, Any]) -> None:
    """Send ``doc`` (plus the job id) to the server runner; never raises on a send failure."""
    cell, session = getattr(engine, "cell", None), getattr(engine, "session", None)
    if cell is None or session is None:
        return
    body = {**doc, "job_id": engine.job_id}
    msg = Message(cmi_headers(session, engine.job_id), P.dumps(body))
    try:
        await cell.fire_and_forget(SERVER_CLIENT, P.RUNTIME_CHANNEL, P.RuntimeTopic.JOB_PROGRESS,
                                   msg, optional=True)
    except Exception as exc:  # progress is best effort: the round goes on
        log.warning("progress report of job %s not sent: %s", engine.job_id, exc)
