"""The federated runtime: jobs run across sites in job cells (server runner, site runner, tasks)."""

from cellnet.fl.runtime.client import JobClient
from cellnet.fl.runtime.context import FLContext, peer_context_from_headers
from cellnet.fl.runtime.controller import Controller, Task, TaskResult
from cellnet.fl.runtime.executor import Executor, ExecutorRunner, Signal
from cellnet.fl.runtime.messenger import JobCellMessenger
from cellnet.fl.runtime.server_runner import ServerRunner
from cellnet.fl.runtime.session import Session, SessionCheck, SessionTable
from cellnet.fl.runtime.site_runner import SiteRunner

__all__ = [
    "Controller",
    "Executor",
    "ExecutorRunner",
    "FLContext",
    "JobCellMessenger",
    "JobClient",
    "ServerRunner",
    "Session",
    "SessionCheck",
    "SessionTable",
    "Signal",
    "SiteRunner",
    "Task",
    "TaskResult",
    "peer_context_from_headers",
]
