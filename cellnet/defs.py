"""The reference API's constants as typed StrEnums, names and string values unchanged.

Users of the reference API (FLARE's ``fl_constant``, ``job_def``,
``client.defs``, ``cmi`` and ``fl_admin_api_spec``) know these names and
values, so they are copied exactly: ``ReturnCode.OK == "OK"``,
``RunStatus.FINISHED_COMPLETED == "FINISHED:COMPLETED"``. Being ``StrEnum``
members they compare equal to, hash like and serialize as the plain strings,
so they can go on the wire and into JSON/CBOR unchanged, while type checkers
and ``ReturnCode("NOPE")`` catch typos. Nothing here is invented: a name the
reference texts do not define is not defined here (the admin API's
``APIStatus`` values are not in the reference text, so it is absent).
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType
from typing import Final

# --- from the reference `fl_constant` -------------------------------------------------


class ReturnCode(StrEnum):
    """Task/request outcome codes carried in replies."""

    BAD_PEER_CONTEXT = "BAD_PEER_CONTEXT"
    BAD_REQUEST_DATA = "BAD_REQUEST_DATA"
    BAD_TASK_DATA = "BAD_TASK_DATA"
    COMMUNICATION_ERROR = "COMMUNICATION_ERROR"
    EMPTY_RESULT = "EMPTY_RESULT"
    ERROR = "ERROR"
    EXECUTION_EXCEPTION = "EXECUTION_EXCEPTION"
    EXECUTION_RESULT_ERROR = "EXECUTION_RESULT_ERROR"
    HANDLER_EXCEPTION = "HANDLER_EXCEPTION"
    MISSING_PEER_CONTEXT = "MISSING_PEER_CONTEXT"
    MODEL_UNRECOGNIZED = "MODEL_UNRECOGNIZED"
    OK = "OK"
    RUN_MISMATCH = "RUN_MISMATCH"
    SERVER_NOT_READY = "SERVER_NOT_READY"
    TASK_ABORTED = "TASK_ABORTED"
    TASK_DATA_FILTER_ERROR = "TASK_DATA_FILTER_ERROR"
    TASK_RESULT_FILTER_ERROR = "TASK_RESULT_FILTER_ERROR"
    TASK_UNKNOWN = "TASK_UNKNOWN"
    TASK_UNSUPPORTED = "TASK_UNSUPPORTED"
    TOPIC_UNKNOWN = "TOPIC_UNKNOWN"
    VALIDATE_TYPE_UNKNOWN = "VALIDATE_TYPE_UNKNOWN"


class AdminCommandNames(StrEnum):
    """Names of the admin commands."""

    ABORT = "abort"
    ABORT_JOB = "abort_job"
    ABORT_TASK = "abort_task"
    AUX_COMMAND = "aux_command"
    CHECK_STATUS = "check_status"
    CLONE_JOB = "clone_job"
    DELETE_JOB = "delete_job"
    DELETE_WORKSPACE = "delete_workspace"
    DEPLOY_APP = "deploy_app"
    DOWNLOAD_JOB = "download_job"
    LIST_JOBS = "list_jobs"
    REMOVE_CLIENT = "remove_client"
    RESET_ERRORS = "reset_errors"
    RESTART = "restart"
    SET_TIMEOUT = "set_timeout"
    SHOW_ERRORS = "show_errors"
    SHOW_STATS = "show_stats"
    SHUTDOWN = "shutdown"
    START_APP = "start_app"
    SUBMIT_JOB = "submit_job"


class MachineStatus(StrEnum):
    """Lifecycle of a server or client process: STOPPED <-> STARTING -> STARTED -> STOPPING ->
    STOPPED."""

    STARTED = "started"
    STARTING = "starting"
    STOPPED = "stopped"
    STOPPING = "stopping"


class EventScope(StrEnum):
    """Whether an event stays local or is fired across the federation."""

    FEDERATION = "federation"
    LOCAL = "local"


class FedEventHeader(StrEnum):
    """Header keys of an event fired across the federation."""

    DIRECTION = "_direction"
    EVENT_TYPE = "_event_type"
    ORIGIN = "_origin"
    TARGETS = "_targets"
    TIMESTAMP = "_timestamp"


class ReservedTopic(StrEnum):
    """Topics reserved by the runtime."""

    ABORT_ASK = "__abort_task__"
    AUX_COMMAND = "__aux_command__"
    END_RUN = "__end_run__"


class ReservedKey(StrEnum):
    """Context property keys reserved by the runtime."""

    APP_ROOT = "__app_root__"
    ARGS = "__args__"
    AUX_RUNNER = "__aux_runner__"
    CLIENT_NAME = "__client_name__"
    COOKIE_JAR = "__cookie_jar__"
    CURRENT_JOB_ID = "__current_job_id__"
    ENGINE = "__engine__"
    EVENT_DATA = "__event_data__"
    EVENT_ID = "__event_id__"
    EVENT_ORIGIN = "__event_origin__"
    EVENT_ORIGIN_SITE = "__event_origin_site__"
    EVENT_SCOPE = "__event_scope__"
    FROM_RANK_NUMBER = "__from_rank_number__"
    IDENTITY_NAME = "__identity_name__"
    IS_RESEND = "__is_resend__"
    JOB_INFO = "__job_info__"
    JOB_RUN_NUMBER = "__job_run_number__"
    MANAGER = "__manager__"
    NUM_OF_PROCESSES = "__num_of_processes__"
    PEER_CTX = "__peer_ctx__"
    RANK_NUMBER = "__rank_number__"
    RC = "__rc__"
    REPLY = "__reply__"
    RUNNER = "__runner__"
    RUN_ABORT_SIGNAL = "__run_abort_signal__"
    RUN_NUM = "__run_num__"
    SECURE_MODE = "__secure_mode__"
    SHAREABLE = "__shareable__"
    SHARED_FL_CONTEXT = "__shared_fl_context__"
    SP_END_POINT = "__sp_end_point__"
    TASK_DATA = "__task_data__"
    TASK_ID = "__task_id__"
    TASK_NAME = "__task_name__"
    TASK_RESULT = "__task_result__"
    WORKFLOW = "__workflow__"
    WORKSPACE_OBJECT = "__workspace_object__"
    WORKSPACE_ROOT = "__workspace_root__"


class FLContextKey(StrEnum):
    """Context property keys readable by components (mostly aliases of ReservedKey values)."""

    APP_ROOT = "__app_root__"
    ARGS = "__args__"
    CLIENT_NAME = "__client_name__"
    CURRENT_JOB_ID = "__current_job_id__"
    CURRENT_RUN = "__run_num__"
    EVENT_DATA = "__event_data__"
    EVENT_ID = "__event_id__"
    EVENT_ORIGIN = "__event_origin__"
    EVENT_ORIGIN_SITE = "__event_origin_site__"
    EVENT_SCOPE = "__event_scope__"
    FROM_RANK_NUMBER = "__from_rank_number__"
    IS_CLIENT_TASK_RESEND = "__is_resend__"
    JOB_INFO = "__job_info__"
    JOB_RUN_NUMBER = "__job_run_number__"
    NUM_OF_PROCESSES = "__num_of_processes__"
    PEER_CONTEXT = "__peer_ctx__"
    RANK_NUMBER = "__rank_number__"
    REPLY = "__reply__"
    RUNNER = "__runner__"
    RUN_ABORT_SIGNAL = "__run_abort_signal__"
    SECURE_MODE = "__secure_mode__"
    SHAREABLE = "__shareable__"
    SP_END_POINT = "__sp_end_point__"
    TASK_DATA = "__task_data__"
    TASK_ID = "__task_id__"
    TASK_NAME = "__task_name__"
    TASK_RESULT = "__task_result__"
    WORKFLOW = "__workflow__"
    WORKSPACE_OBJECT = "__workspace_object__"
    WORKSPACE_ROOT = "__workspace_root__"


class LogMessageTag(StrEnum):
    """Tags of log records forwarded as messages."""

    CRITICAL = "log/critical"
    DEBUG = "log/debug"
    ERROR = "log/error"
    EXCEPTION = "log/exception"
    INFO = "log/info"
    LOG_RECORD = "log_record"
    WARNING = "log/warning"


class WorkspaceConstants(StrEnum):
    """Fixed file names and prefixes inside a workspace folder."""

    APP_PREFIX = "app_"
    AUDIT_LOG = "audit.log"
    LOGGING_CONFIG = "log.config"
    RESTART_FILE = "restart.fl"
    SHUTDOWN_FILE = "shutdown.fl"
    WORKSPACE_PREFIX = ""


class ServerCommandNames(StrEnum):
    """Commands a job cell sends to the server."""

    AUX_COMMUNICATE = "aux_communicate"
    AUX_SEND = "aux_send"
    GET_CLIENTS = "get_clients"
    GET_ERRORS = "get_errors"
    GET_RUN_INFO = "get_run_info"
    GET_TASK = "get_task"
    HEARTBEAT = "heartbeat"
    SHOW_STATS = "show_stats"
    SUBMIT_UPDATE = "submit_update"


class ServerCommandKey(StrEnum):
    """Keys inside server command payloads."""

    AUX_REPLY = "aux_reply"
    CLIENTS = "clients"
    COLLECTOR = "collector"
    COMMAND = "command"
    DATA = "data"
    FL_CLIENT = "fl_client"
    FL_CONTEXT = "fl_context"
    JOB_ID = "job_id"
    PEER_FL_CONTEXT = "peer_fl_ctx"
    SHAREABLE = "shareable"
    TASK_ID = "task_id"
    TASK_NAME = "task_name"
    TOPIC = "topic"


class SystemComponents(StrEnum):
    """Ids of the built-in runtime components."""

    CANCEL_RESOURCE_PROCESSOR = "cancel_resource_processor"
    CHECK_RESOURCE_PROCESSOR = "check_resource_processor"
    CLIENT_RUNNER = "client_runner"
    JOB_MANAGER = "job_manager"
    JOB_RUNNER = "job_runner"
    JOB_SCHEDULER = "job_scheduler"
    RESOURCE_CONSUMER = "resource_consumer"
    RESOURCE_MANAGER = "resource_manager"
    SERVER_RUNNER = "server_runner"


class RunProcessKey(StrEnum):
    """Keys describing a job's child process."""

    CHILD_PROCESS = "_child_process"
    CONNECTION = "_comm_conn"
    JOB_ID = "_job_id"
    LISTEN_PORT = "_listen_port"
    PARTICIPANTS = "_participants"
    STATUS = "_status"


class SnapshotKey(StrEnum):
    """Keys of a saved job snapshot."""

    FL_CONTEXT = "fl_context"
    JOB_CLIENTS = "_job_clients"
    JOB_ID = "_job_id"
    JOB_INFO = "_job_info"
    SERVER_RUNNER = "_Server_Runner"
    WORKSPACE = "_workspace"


# --- from the reference `job_def` -----------------------------------------------------


class RunStatus(StrEnum):
    """Job lifecycle states; every terminal state starts with 'FINISHED:'."""

    ABANDONED = "FINISHED:ABANDONED"
    APPROVED = "APPROVED"
    DISPATCHED = "DISPATCHED"
    FAILED_TO_RUN = "FINISHED:FAILED_TO_RUN"
    FINISHED_ABNORMAL = "FINISHED:ABNORMAL"
    FINISHED_ABORTED = "FINISHED:ABORTED"
    FINISHED_CANT_SCHEDULE = "FINISHED:CAN_NOT_SCHEDULE"
    FINISHED_COMPLETED = "FINISHED:COMPLETED"
    FINISHED_EXECUTION_EXCEPTION = "FINISHED:EXECUTION_EXCEPTION"
    RUNNING = "RUNNING"
    SUBMITTED = "SUBMITTED"


class JobMetaKey(StrEnum):
    """Keys of a job's meta.json / job store record."""

    APPROVALS = "approvals"
    CLONED_FROM = "cloned_from"
    CONTENT_LOCATION = "content_location"
    CUSTOM_PROPS = "custom_props"
    DATA_STORAGE_FORMAT = "data_storage_format"
    DEPLOY_MAP = "deploy_map"
    DURATION = "duration"
    EDGE_METHOD = "edge_method"
    FROM_HUB_SITE = "from_hub_site"
    JOB_CLIENTS = "job_clients"
    JOB_DEPLOY_DETAIL = "job_deploy_detail"
    JOB_FOLDER_NAME = "job_folder_name"
    JOB_ID = "job_id"
    JOB_LAUNCHER_SPEC = "launcher_spec"
    JOB_NAME = "name"
    LAST_SCHEDULE_TIME = "last_schedule_time"
    MANDATORY_CLIENTS = "mandatory_clients"
    MIN_CLIENTS = "min_clients"
    RESOURCE_SPEC = "resource_spec"
    RESULT_LOCATION = "result_location"
    SCHEDULE_COUNT = "schedule_count"
    SCHEDULE_HISTORY = "schedule_history"
    SCOPE = "scope"
    START_TIME = "start_time"
    STATS_POOL_CONFIG = "stats_pool_config"
    STATUS = "status"
    STUDY = "study"
    SUBMITTER_NAME = "submitter_name"
    SUBMITTER_ORG = "submitter_org"
    SUBMITTER_ROLE = "submitter_role"
    SUBMIT_TIME = "submit_time"
    SUBMIT_TIME_ISO = "submit_time_iso"


class JobDataKey(StrEnum):
    """Keys and prefixes of job data in the job store."""

    DATA = "data"
    JOB_DATA = "job_data_"
    META = "meta"
    WORKSPACE_DATA = "workspace_data_"


class SubmitRecordKey(StrEnum):
    """Keys of a submit record (the idempotent-submit bookkeeping)."""

    DELETED_BY = "deleted_by"
    DELETED_TIME = "deleted_time"
    JOB_CONTENT_HASH = "job_content_hash"
    JOB_FOLDER_NAME = "job_folder_name"
    JOB_ID = "job_id"
    JOB_NAME = "job_name"
    SCHEMA_VERSION = "schema_version"
    STATE = "state"
    STUDY = "study"
    SUBMITTER_NAME = "submitter_name"
    SUBMITTER_ORG = "submitter_org"
    SUBMITTER_ROLE = "submitter_role"
    SUBMIT_TIME = "submit_time"
    SUBMIT_TOKEN = "submit_token"


class SubmitRecordState(StrEnum):
    """States of a submit record."""

    CREATED = "created"
    CREATING = "creating"
    JOB_DELETED = "job_deleted"


# --- from the reference `client.defs` -------------------------------------------------


class MetaKey(StrEnum):
    """Keys of task/result meta exchanged with an external FlareAgent."""

    CURRENT_ROUND = "current_round"
    DATA_KIND = "data_kind"
    FILTER_HISTORY = "filter_history"
    INITIAL_METRICS = "initial_metrics"
    NUM_STEPS_CURRENT_ROUND = "NUM_STEPS_CURRENT_ROUND"
    PROCESSED_ALGORITHM = "PROCESSED_ALGORITHM"
    PROCESSED_KEYS = "PROCESSED_KEYS"
    TOTAL_ROUND = "total_round"


class RC(StrEnum):
    """Return codes of a task result submitted by a FlareAgent."""

    BAD_TASK_DATA = "BAD_TASK_DATA"
    EXECUTION_EXCEPTION = "EXECUTION_EXCEPTION"
    OK = "OK"


class MsgHeader(StrEnum):
    """Header keys of agent task messages."""

    RC = "rc"
    TASK_ID = "task_id"
    TASK_NAME = "task_name"


class PayloadKey(StrEnum):
    """Keys of an agent task payload."""

    DATA = "data"
    META = "meta"


# --- from the reference `cmi` ---------------------------------------------------------


class CMIHeader(StrEnum):
    """Message header names (HEADER_*) and message property keys (PROP_KEY_*) of the cell
    message interface."""

    HEADER_CLIENT_NAME = "cmi.client_name"
    HEADER_CLIENT_TOKEN = "cmi.client_token"
    HEADER_JOB_ID = "cmi.job_id"
    HEADER_KEY_PEER_PROPS = "cmi.peer_props"
    HEADER_PROJECT_NAME = "cmi.project"
    HEADER_SSID = "cmi.ssid"
    PROP_KEY_CLIENT = "cmi.client"
    PROP_KEY_FL_CTX = "cmi.fl_ctx"
    PROP_KEY_PEER_CTX = "cmi.peer_ctx"


# --- from the reference `fl_admin_api_spec` -------------------------------------------


class TargetType(StrEnum):
    """Target of an admin command."""

    ALL = "all"
    CLIENT = "client"
    SERVER = "server"


class NonSerializableKeys:
    """Context keys whose values never leave the process (engine, manager, runner)."""

    KEYS: Final[frozenset[str]] = frozenset(
        {ReservedKey.ENGINE, ReservedKey.MANAGER, ReservedKey.RUNNER}
    )


# --- cell-level return codes and their mapping (reference `cmi`) ----------------------


class CellReturnCode(StrEnum):
    """Return codes of the cell layer: the keys of ``RC_TABLE`` plus ``OK``."""

    OK = "ok"
    ABORT_RUN = "abort_run"
    AUTHENTICATION_ERROR = "authentication_error"
    COMM_ERROR = "comm_error"
    INVALID_REQUEST = "invalid_request"
    INVALID_SESSION = "invalid_session"
    PROCESS_EXCEPTION = "process_exception"
    SERVICE_UNAVAILABLE = "service_unavailable"
    TIMEOUT = "timeout"


RC_TABLE: Final[Mapping[CellReturnCode, str]] = MappingProxyType(
    {
        CellReturnCode.ABORT_RUN: "abort_run",
        CellReturnCode.AUTHENTICATION_ERROR: "unauthenticated",
        CellReturnCode.COMM_ERROR: ReturnCode.COMMUNICATION_ERROR,
        CellReturnCode.INVALID_REQUEST: "invalid_request",
        CellReturnCode.INVALID_SESSION: "invalid_session",
        CellReturnCode.PROCESS_EXCEPTION: ReturnCode.EXECUTION_EXCEPTION,
        CellReturnCode.SERVICE_UNAVAILABLE: "service_unavailable",
        CellReturnCode.TIMEOUT: ReturnCode.COMMUNICATION_ERROR,
    }
)
"""Cell return code -> the code a federated-layer reply carries (read-only)."""


def to_return_code(cell_rc: str) -> ReturnCode | str:
    """Map a cell-level return code to the reply code the federated layer reports.

    ``"ok"`` maps to ``ReturnCode.OK``; the codes of ``RC_TABLE`` map through
    it (a ``ReturnCode`` member where the value is one); any other code, e.g.
    one sent by a newer peer, maps to ``ReturnCode.ERROR`` as the reference does.
    """
    if not isinstance(cell_rc, str):
        raise TypeError(f"cell return code must be a str, got {type(cell_rc).__name__}")
    if cell_rc == CellReturnCode.OK:
        return ReturnCode.OK
    return RC_TABLE.get(cell_rc, ReturnCode.ERROR)  # type: ignore[call-overload]
