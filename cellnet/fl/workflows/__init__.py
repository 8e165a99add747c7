"""Ready-made workflows: FedAvg (ScatterAndGather), cyclic transfer, cross-site evaluation."""

from cellnet.fl.workflows.constants import DEFAULT_TASK_TIMEOUT, AppConstants
from cellnet.fl.workflows.cross_site import CrossSiteEval, format_table
from cellnet.fl.workflows.cyclic import CyclicWorkflow
from cellnet.fl.workflows.scatter_gather import AGGREGATORS, ScatterAndGather
from cellnet.fl.workflows.sequence import WorkflowSequence

__all__ = [
    "AGGREGATORS",
    "DEFAULT_TASK_TIMEOUT",
    "AppConstants",
    "CrossSiteEval",
    "CyclicWorkflow",
    "ScatterAndGather",
    "WorkflowSequence",
    "format_table",
]
