"""Channels, topics and header names of the runtime, and the CBOR control payloads."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import cbor2

from cellnet.defs import ReservedKey, ReservedTopic
from cellnet.errors import JobError
from cellnet.message import Message

#: Admin-like clients -> server: submit / list / get / abort / errors.
JOB_CHANNEL = "job"
#: Parents, sites and job cells <-> server runner: login, resources, deploy, reports.
RUNTIME_CHANNEL = "fl_runtime"
#: Server job cell <-> site job cells: tasks.
TASK_CHANNEL = "fl_task"


class JobTopic:
    SUBMIT = "submit"
    LIST = "list"
    GET = "get"
    ABORT = "abort"
    ERRORS = "show_errors"


class RuntimeTopic:
    LOGIN = "login"
    CHECK_RESOURCES = "check_resources"
    CANCEL_RESOURCES = "cancel_resources"
    DEPLOY = "deploy"
    ABORT_JOB = "abort_job"
    JOB_REPORT = "job_report"  # a job cell reports its end (finished / error)
    JOB_EXITED = "job_exited"  # a site reports that a job process exited
    JOB_PROGRESS = "job_progress"  # the server job cell reports a workflow's progress


class TaskTopic:
    RUN = "run"
    END_RUN = ReservedTopic.END_RUN.value
    ABORT_TASK = ReservedTopic.ABORT_ASK.value


TASK_NAME = ReservedKey.TASK_NAME.value
TASK_ID = ReservedKey.TASK_ID.value
TASK_RC = ReservedKey.RC.value


def dumps(doc: Mapping[str, Any]) -> bytes:
    return cbor2.dumps(dict(doc))


def loads(msg: Message, what: str) -> dict[str, Any]:
    """The CBOR map in ``msg``'s payload; JobError if there is none."""
    if msg.payload is None or isinstance(msg.payload, Mapping):
        raise JobError(f"{what}: the message carries no control payload")
    try:
        doc = cbor2.loads(bytes(msg.payload))
    except (cbor2.CBORDecodeError, ValueError) as exc:
        raise JobError(f"{what}: bad control payload: {exc}") from exc
    if not isinstance(doc, dict):
        raise JobError(f"{what}: control payload is not a map")
    return doc


def ok_reply(doc: Mapping[str, Any] | None = None) -> Message:
    return Message({}, dumps(doc or {}))


def error_reply(code: str, error: str) -> Message:
    """A handled-but-refused reply: cell code ``code`` (e.g. invalid_request) and the reason."""
    return Message({"cellnet.return_code": code, "cellnet.error": error})
