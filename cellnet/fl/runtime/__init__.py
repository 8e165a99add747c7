"""The federated runtime: jobs run across sites in job cells (server runner, site runner, tasks)."""

from cellnet.fl.runtime.agent_executor import ClientAPIExecutor, TrainingProcessError
from cellnet.fl.runtime.client import JobClient
from cellnet.fl.runtime.context import FLContext, peer_context_from_headers
from cellnet.fl.runtime.controller import Controller, ResultCallback, Task, TaskResult
from cellnet.fl.runtime.events import EventBus, EventType
from cellnet.fl.runtime.executor import Executor, ExecutorRunner, Signal, TaskUnsupportedError
from cellnet.fl.runtime.inplace import (
    InPlaceResults,
    ResultFold,
    RoundAccumulator,
    in_place_results,
)
from cellnet.fl.runtime.messenger import JobCellMessenger
from cellnet.fl.runtime.server_runner import ServerRunner, peer_identity
from cellnet.fl.runtime.session import Session, SessionCheck, SessionTable
from cellnet.fl.runtime.site_runner import SiteRunner
from cellnet.fl.runtime.task_filters import (
    FilterStage,
    TaskFilterError,
    TaskFilters,
    load_task_filters,
)

__all__ = [
    "ClientAPIExecutor",
    "Controller",
    "EventBus",
    "EventType",
    "Executor",
    "ExecutorRunner",
    "FLContext",
    "FilterStage",
    "InPlaceResults",
    "JobCellMessenger",
    "JobClient",
    "ResultCallback",
    "ResultFold",
    "RoundAccumulator",
    "ServerRunner",
    "Session",
    "SessionCheck",
    "SessionTable",
    "Signal",
    "SiteRunner",
    "Task",
    "TaskFilterError",
    "TaskFilters",
    "TaskResult",
    "TaskUnsupportedError",
    "TrainingProcessError",
    "in_place_results",
    "load_task_filters",
    "peer_context_from_headers",
    "peer_identity",
]
