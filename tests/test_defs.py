"""The reference constants: every class has exactly the reference names and values.

The expected tables are literal copies of the reference texts (so this test runs
on a clean clone); they are checked in both directions.
"""

from __future__ import annotations

import json
from enum import StrEnum

import cbor2
import pytest

from cellnet import defs

EXPECTED: dict[str, dict[str, str]] = {
    "ReturnCode": {
        "BAD_PEER_CONTEXT": "BAD_PEER_CONTEXT",
        "BAD_REQUEST_DATA": "BAD_REQUEST_DATA",
        "BAD_TASK_DATA": "BAD_TASK_DATA",
        "COMMUNICATION_ERROR": "COMMUNICATION_ERROR",
        "EMPTY_RESULT": "EMPTY_RESULT",
        "ERROR": "ERROR",
        "EXECUTION_EXCEPTION": "EXECUTION_EXCEPTION",
        "EXECUTION_RESULT_ERROR": "EXECUTION_RESULT_ERROR",
        "HANDLER_EXCEPTION": "HANDLER_EXCEPTION",
        "MISSING_PEER_CONTEXT": "MISSING_PEER_CONTEXT",
        "MODEL_UNRECOGNIZED": "MODEL_UNRECOGNIZED",
        "OK": "OK",
        "RUN_MISMATCH": "RUN_MISMATCH",
        "SERVER_NOT_READY": "SERVER_NOT_READY",
        "TASK_ABORTED": "TASK_ABORTED",
        "TASK_DATA_FILTER_ERROR": "TASK_DATA_FILTER_ERROR",
        "TASK_RESULT_FILTER_ERROR": "TASK_RESULT_FILTER_ERROR",
        "TASK_UNKNOWN": "TASK_UNKNOWN",
        "TASK_UNSUPPORTED": "TASK_UNSUPPORTED",
        "TOPIC_UNKNOWN": "TOPIC_UNKNOWN",
        "VALIDATE_TYPE_UNKNOWN": "VALIDATE_TYPE_UNKNOWN",
    },
    "AdminCommandNames": {
        "ABORT": "abort",
        "ABORT_JOB": "abort_job",
        "ABORT_TASK": "abort_task",
        "AUX_COMMAND": "aux_command",
        "CHECK_STATUS": "check_status",
        "CLONE_JOB": "clone_job",
        "DELETE_JOB": "delete_job",
        "DELETE_WORKSPACE": "delete_workspace",
        "DEPLOY_APP": "deploy_app",
        "DOWNLOAD_JOB": "download_job",
        "LIST_JOBS": "list_jobs",
        "REMOVE_CLIENT": "remove_client",
        "RESET_ERRORS": "reset_errors",
        "RESTART": "restart",
        "SET_TIMEOUT": "set_timeout",
        "SHOW_ERRORS": "show_errors",
        "SHOW_STATS": "show_stats",
        "SHUTDOWN": "shutdown",
        "START_APP": "start_app",
        "SUBMIT_JOB": "submit_job",
    },
    "MachineStatus": {
        "STARTED": "started",
        "STARTING": "starting",
        "STOPPED": "stopped",
        "STOPPING": "stopping",
    },
    "EventScope": {
        "FEDERATION": "federation",
        "LOCAL": "local",
    },
    "FedEventHeader": {
        "DIRECTION": "_direction",
        "EVENT_TYPE": "_event_type",
        "ORIGIN": "_origin",
        "TARGETS": "_targets",
        "TIMESTAMP": "_timestamp",
    },
    "ReservedTopic": {
        "ABORT_ASK": "__abort_task__",
        "AUX_COMMAND": "__aux_command__",
        "END_RUN": "__end_run__",
    },
    "ReservedKey": {
        "APP_ROOT": "__app_root__",
        "ARGS": "__args__",
        "AUX_RUNNER": "__aux_runner__",
        "CLIENT_NAME": "__client_name__",
        "COOKIE_JAR": "__cookie_jar__",
        "CURRENT_JOB_ID": "__current_job_id__",
        "ENGINE": "__engine__",
        "EVENT_DATA": "__event_data__",
        "EVENT_ID": "__event_id__",
        "EVENT_ORIGIN": "__event_origin__",
        "EVENT_ORIGIN_SITE": "__event_origin_site__",
        "EVENT_SCOPE": "__event_scope__",
        "FROM_RANK_NUMBER": "__from_rank_number__",
        "IDENTITY_NAME": "__identity_name__",
        "IS_RESEND": "__is_resend__",
        "JOB_INFO": "__job_info__",
        "JOB_RUN_NUMBER": "__job_run_number__",
        "MANAGER": "__manager__",
        "NUM_OF_PROCESSES": "__num_of_processes__",
        "PEER_CTX": "__peer_ctx__",
        "RANK_NUMBER": "__rank_number__",
        "RC": "__rc__",
        "REPLY": "__reply__",
        "RUNNER": "__runner__",
        "RUN_ABORT_SIGNAL": "__run_abort_signal__",
        "RUN_NUM": "__run_num__",
        "SECURE_MODE": "__secure_mode__",
        "SHAREABLE": "__shareable__",
        "SHARED_FL_CONTEXT": "__shared_fl_context__",
        "SP_END_POINT": "__sp_end_point__",
        "TASK_DATA": "__task_data__",
        "TASK_ID": "__task_id__",
        "TASK_NAME": "__task_name__",
        "TASK_RESULT": "__task_result__",
        "WORKFLOW": "__workflow__",
        "WORKSPACE_OBJECT": "__workspace_object__",
        "WORKSPACE_ROOT": "__workspace_root__",
    },
    "FLContextKey": {
        "APP_ROOT": "__app_root__",
        "ARGS": "__args__",
        "CLIENT_NAME": "__client_name__",
        "CURRENT_JOB_ID": "__current_job_id__",
        "CURRENT_RUN": "__run_num__",
        "EVENT_DATA": "__event_data__",
        "EVENT_ID": "__event_id__",
        "EVENT_ORIGIN": "__event_origin__",
        "EVENT_ORIGIN_SITE": "__event_origin_site__",
        "EVENT_SCOPE": "__event_scope__",
        "FROM_RANK_NUMBER": "__from_rank_number__",
        "IS_CLIENT_TASK_RESEND": "__is_resend__",
        "JOB_INFO": "__job_info__",
        "JOB_RUN_NUMBER": "__job_run_number__",
        "NUM_OF_PROCESSES": "__num_of_processes__",
        "PEER_CONTEXT": "__peer_ctx__",
        "RANK_NUMBER": "__rank_number__",
        "REPLY": "__reply__",
        "RUNNER": "__runner__",
        "RUN_ABORT_SIGNAL": "__run_abort_signal__",
        "SECURE_MODE": "__secure_mode__",
        "SHAREABLE": "__shareable__",
        "SP_END_POINT": "__sp_end_point__",
        "TASK_DATA": "__task_data__",
        "TASK_ID": "__task_id__",
        "TASK_NAME": "__task_name__",
        "TASK_RESULT": "__task_result__",
        "WORKFLOW": "__workflow__",
        "WORKSPACE_OBJECT": "__workspace_object__",
        "WORKSPACE_ROOT": "__workspace_root__",
    },
    "LogMessageTag": {
        "CRITICAL": "log/critical",
        "DEBUG": "log/debug",
        "ERROR": "log/error",
        "EXCEPTION": "log/exception",
        "INFO": "log/info",
        "LOG_RECORD": "log_record",
        "WARNING": "log/warning",
    },
    "WorkspaceConstants": {
        "APP_PREFIX": "app_",
        "AUDIT_LOG": "audit.log",
        "LOGGING_CONFIG": "log.config",
        "RESTART_FILE": "restart.fl",
        "SHUTDOWN_FILE": "shutdown.fl",
        "WORKSPACE_PREFIX": "",
    },
    "ServerCommandNames": {
        "AUX_COMMUNICATE": "aux_communicate",
        "AUX_SEND": "aux_send",
        "GET_CLIENTS": "get_clients",
        "GET_ERRORS": "get_errors",
        "GET_RUN_INFO": "get_run_info",
        "GET_TASK": "get_task",
        "HEARTBEAT": "heartbeat",
        "SHOW_STATS": "show_stats",
        "SUBMIT_UPDATE": "submit_update",
    },
    "ServerCommandKey": {
        "AUX_REPLY": "aux_reply",
        "CLIENTS": "clients",
        "COLLECTOR": "collector",
        "COMMAND": "command",
        "DATA": "data",
        "FL_CLIENT": "fl_client",
        "FL_CONTEXT": "fl_context",
        "JOB_ID": "job_id",
        "PEER_FL_CONTEXT": "peer_fl_ctx",
        "SHAREABLE": "shareable",
        "TASK_ID": "task_id",
        "TASK_NAME": "task_name",
        "TOPIC": "topic",
    },
    "SystemComponents": {
        "CANCEL_RESOURCE_PROCESSOR": "cancel_resource_processor",
        "CHECK_RESOURCE_PROCESSOR": "check_resource_processor",
        "CLIENT_RUNNER": "client_runner",
        "JOB_MANAGER": "job_manager",
        "JOB_RUNNER": "job_runner",
        "JOB_SCHEDULER": "job_scheduler",
        "RESOURCE_CONSUMER": "resource_consumer",
        "RESOURCE_MANAGER": "resource_manager",
        "SERVER_RUNNER": "server_runner",
    },
    "RunProcessKey": {
        "CHILD_PROCESS": "_child_process",
        "CONNECTION": "_comm_conn",
        "JOB_ID": "_job_id",
        "LISTEN_PORT": "_listen_port",
        "PARTICIPANTS": "_participants",
        "STATUS": "_status",
    },
    "SnapshotKey": {
        "FL_CONTEXT": "fl_context",
        "JOB_CLIENTS": "_job_clients",
        "JOB_ID": "_job_id",
        "JOB_INFO": "_job_info",
        "SERVER_RUNNER": "_Server_Runner",
        "WORKSPACE": "_workspace",
    },
    "RunStatus": {
        "ABANDONED": "FINISHED:ABANDONED",
        "APPROVED": "APPROVED",
        "DISPATCHED": "DISPATCHED",
        "FAILED_TO_RUN": "FINISHED:FAILED_TO_RUN",
        "FINISHED_ABNORMAL": "FINISHED:ABNORMAL",
        "FINISHED_ABORTED": "FINISHED:ABORTED",
        "FINISHED_CANT_SCHEDULE": "FINISHED:CAN_NOT_SCHEDULE",
        "FINISHED_COMPLETED": "FINISHED:COMPLETED",
        "FINISHED_EXECUTION_EXCEPTION": "FINISHED:EXECUTION_EXCEPTION",
        "RUNNING": "RUNNING",
        "SUBMITTED": "SUBMITTED",
    },
    "JobMetaKey": {
        "APPROVALS": "approvals",
        "CLONED_FROM": "cloned_from",
        "CONTENT_LOCATION": "content_location",
        "CUSTOM_PROPS": "custom_props",
        "DATA_STORAGE_FORMAT": "data_storage_format",
        "DEPLOY_MAP": "deploy_map",
        "DURATION": "duration",
        "EDGE_METHOD": "edge_method",
        "FROM_HUB_SITE": "from_hub_site",
        "JOB_CLIENTS": "job_clients",
        "JOB_DEPLOY_DETAIL": "job_deploy_detail",
        "JOB_FOLDER_NAME": "job_folder_name",
        "JOB_ID": "job_id",
        "JOB_LAUNCHER_SPEC": "launcher_spec",
        "JOB_NAME": "name",
        "LAST_SCHEDULE_TIME": "last_schedule_time",
        "MANDATORY_CLIENTS": "mandatory_clients",
        "MIN_CLIENTS": "min_clients",
        "RESOURCE_SPEC": "resource_spec",
        "RESULT_LOCATION": "result_location",
        "SCHEDULE_COUNT": "schedule_count",
        "SCHEDULE_HISTORY": "schedule_history",
        "SCOPE": "scope",
        "START_TIME": "start_time",
        "STATS_POOL_CONFIG": "stats_pool_config",
        "STATUS": "status",
        "STUDY": "study",
        "SUBMITTER_NAME": "submitter_name",
        "SUBMITTER_ORG": "submitter_org",
        "SUBMITTER_ROLE": "submitter_role",
        "SUBMIT_TIME": "submit_time",
        "SUBMIT_TIME_ISO": "submit_time_iso",
    },
    "JobDataKey": {
        "DATA": "data",
        "JOB_DATA": "job_data_",
        "META": "meta",
        "WORKSPACE_DATA": "workspace_data_",
    },
    "SubmitRecordKey": {
        "DELETED_BY": "deleted_by",
        "DELETED_TIME": "deleted_time",
        "JOB_CONTENT_HASH": "job_content_hash",
        "JOB_FOLDER_NAME": "job_folder_name",
        "JOB_ID": "job_id",
        "JOB_NAME": "job_name",
        "SCHEMA_VERSION": "schema_version",
        "STATE": "state",
        "STUDY": "study",
        "SUBMITTER_NAME": "submitter_name",
        "SUBMITTER_ORG": "submitter_org",
        "SUBMITTER_ROLE": "submitter_role",
        "SUBMIT_TIME": "submit_time",
        "SUBMIT_TOKEN": "submit_token",
    },
    "SubmitRecordState": {
        "CREATED": "created",
        "CREATING": "creating",
        "JOB_DELETED": "job_deleted",
    },
    "MetaKey": {
        "CURRENT_ROUND": "current_round",
        "DATA_KIND": "data_kind",
        "FILTER_HISTORY": "filter_history",
        "INITIAL_METRICS": "initial_metrics",
        "NUM_STEPS_CURRENT_ROUND": "NUM_STEPS_CURRENT_ROUND",
        "PROCESSED_ALGORITHM": "PROCESSED_ALGORITHM",
        "PROCESSED_KEYS": "PROCESSED_KEYS",
        "TOTAL_ROUND": "total_round",
    },
    "RC": {
        "BAD_TASK_DATA": "BAD_TASK_DATA",
        "EXECUTION_EXCEPTION": "EXECUTION_EXCEPTION",
        "OK": "OK",
    },
    "MsgHeader": {
        "RC": "rc",
        "TASK_ID": "task_id",
        "TASK_NAME": "task_name",
    },
    "PayloadKey": {
        "DATA": "data",
        "META": "meta",
    },
    "CMIHeader": {
        "HEADER_CLIENT_NAME": "cmi.client_name",
        "HEADER_CLIENT_TOKEN": "cmi.client_token",
        "HEADER_JOB_ID": "cmi.job_id",
        "HEADER_KEY_PEER_PROPS": "cmi.peer_props",
        "HEADER_PROJECT_NAME": "cmi.project",
        "HEADER_SSID": "cmi.ssid",
        "PROP_KEY_CLIENT": "cmi.client",
        "PROP_KEY_FL_CTX": "cmi.fl_ctx",
        "PROP_KEY_PEER_CTX": "cmi.peer_ctx",
    },
    "TargetType": {
        "ALL": "all",
        "CLIENT": "client",
        "SERVER": "server",
    },
    "CellReturnCode": {
        "OK": "ok",
        "ABORT_RUN": "abort_run",
        "AUTHENTICATION_ERROR": "authentication_error",
        "COMM_ERROR": "comm_error",
        "INVALID_REQUEST": "invalid_request",
        "INVALID_SESSION": "invalid_session",
        "PROCESS_EXCEPTION": "process_exception",
        "SERVICE_UNAVAILABLE": "service_unavailable",
        "TIMEOUT": "timeout",
    },
}

# cmi.RC_TABLE exactly as the reference prints it.
EXPECTED_RC_TABLE = {
    "abort_run": "abort_run",
    "authentication_error": "unauthenticated",
    "comm_error": "COMMUNICATION_ERROR",
    "invalid_request": "invalid_request",
    "invalid_session": "invalid_session",
    "process_exception": "EXECUTION_EXCEPTION",
    "service_unavailable": "service_unavailable",
    "timeout": "COMMUNICATION_ERROR",
}


@pytest.mark.parametrize("cls_name", sorted(EXPECTED))
def test_every_expected_member_exists_with_its_value(cls_name):
    cls = getattr(defs, cls_name)
    assert issubclass(cls, StrEnum)
    for name, value in EXPECTED[cls_name].items():
        member = cls[name]
        assert member.value == value, f"{cls_name}.{name}"
        assert member == value
        assert cls(value) is member


@pytest.mark.parametrize("cls_name", sorted(EXPECTED))
def test_no_extra_members_and_no_aliases(cls_name):
    cls = getattr(defs, cls_name)
    assert set(cls.__members__) == set(EXPECTED[cls_name])
    assert len(list(cls)) == len(EXPECTED[cls_name])  # no value shared by two names


def test_every_strenum_in_the_module_is_pinned_here():
    enums = {
        name
        for name, obj in vars(defs).items()
        if isinstance(obj, type) and issubclass(obj, StrEnum) and obj is not StrEnum
    }
    assert enums == set(EXPECTED)


def test_well_known_values():
    assert defs.ReturnCode.OK == "OK"
    assert defs.RunStatus.FINISHED_COMPLETED == "FINISHED:COMPLETED"
    assert defs.AdminCommandNames.SUBMIT_JOB == "submit_job"
    assert defs.CMIHeader.HEADER_CLIENT_NAME == "cmi.client_name"
    assert defs.WorkspaceConstants.WORKSPACE_PREFIX == ""
    assert all(s.startswith("FINISHED:") for s in defs.RunStatus if s.name.startswith("FINISH"))


def test_unknown_value_is_rejected():
    with pytest.raises(ValueError, match="NOT_A_CODE"):
        defs.ReturnCode("NOT_A_CODE")
    with pytest.raises(KeyError):
        defs.RunStatus["FINISHED"]


def test_members_serialize_as_plain_strings():
    assert json.dumps({defs.ReturnCode.OK: defs.RunStatus.RUNNING}) == '{"OK": "RUNNING"}'
    assert cbor2.dumps(defs.JobMetaKey.JOB_ID) == cbor2.dumps("job_id")
    assert {"OK": 1}[defs.ReturnCode.OK] == 1
    assert str(defs.CellReturnCode.TIMEOUT) == "timeout"


def test_non_serializable_keys():
    assert defs.NonSerializableKeys.KEYS == frozenset({"__engine__", "__manager__", "__runner__"})
    assert "__engine__" in defs.NonSerializableKeys.KEYS
    assert isinstance(defs.NonSerializableKeys.KEYS, frozenset)


def test_rc_table_is_exactly_the_reference():
    assert dict(defs.RC_TABLE) == EXPECTED_RC_TABLE
    assert all(isinstance(k, defs.CellReturnCode) for k in defs.RC_TABLE)
    assert set(defs.RC_TABLE) | {defs.CellReturnCode.OK} == set(defs.CellReturnCode)


def test_rc_table_is_read_only():
    with pytest.raises(TypeError):
        defs.RC_TABLE[defs.CellReturnCode.TIMEOUT] = "OK"  # type: ignore[index]
    assert defs.RC_TABLE[defs.CellReturnCode.TIMEOUT] == "COMMUNICATION_ERROR"


@pytest.mark.parametrize(("cell_rc", "expected"), sorted(EXPECTED_RC_TABLE.items()))
def test_to_return_code_maps_through_the_table(cell_rc, expected):
    assert defs.to_return_code(cell_rc) == expected
    assert defs.to_return_code(defs.CellReturnCode(cell_rc)) == expected


def test_to_return_code_gives_return_code_members_where_they_exist():
    assert defs.to_return_code("timeout") is defs.ReturnCode.COMMUNICATION_ERROR
    assert defs.to_return_code("process_exception") is defs.ReturnCode.EXECUTION_EXCEPTION
    assert defs.to_return_code("ok") is defs.ReturnCode.OK
    assert defs.to_return_code(defs.CellReturnCode.OK) is defs.ReturnCode.OK


def test_to_return_code_unknown_is_error_and_non_str_is_type_error():
    assert defs.to_return_code("some_future_code") is defs.ReturnCode.ERROR
    assert defs.to_return_code("OK") is defs.ReturnCode.ERROR  # cell codes are lower case
    with pytest.raises(TypeError, match="must be a str"):
        defs.to_return_code(None)  # type: ignore[arg-type]
