"""Names workflows and executors share: task names and meta keys (the reference's app constants)."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["DEFAULT_TASK_TIMEOUT", "AppConstants"]

#: Seconds a site may take to answer a training/validation task unless the job config says.
DEFAULT_TASK_TIMEOUT = 600.0


class AppConstants(StrEnum):
    """Task names and meta keys with the string values users of the reference know."""

    CURRENT_ROUND = "current_round"
    NUM_ROUNDS = "num_rounds"
    START_ROUND = "start_round"
    TASK_TRAIN = "train"
    TASK_VALIDATION = "validate"
    TASK_SUBMIT_MODEL = "submit_model"
    VALIDATION_RESULT = "validation_result"
    MODEL_OWNER = "model_owner"
    GLOBAL_MODEL = "global_model"
    CROSS_SITE_EVAL = "cross_site_eval"
