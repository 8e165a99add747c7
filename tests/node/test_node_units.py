"""CellNode construction rules, built-in helpers, workspace logs, run_main's argument errors."""

from __future__ import annotations

import json
import logging
import socket

import pytest

from cellnet.cell import Cell
from cellnet.errors import IdentityMismatchError, ProvisionError
from cellnet.message import Message
from cellnet.node import CellNode, json_payload, statistics_dict
from cellnet.node._children import ENV_FQCN, ENV_HOST, ENV_KIT, ENV_PORT, child_argv
from cellnet.node._node import _audit_refusal
from cellnet.run import run_main
from cellnet.workspace import Workspace, audit


def test_defaults_come_from_the_kit(kits):
    server = CellNode(kits / "server")
    assert server.uplink is None and server.listen == ("127.0.0.1", 8002) and server.connect is None
    site = CellNode(kits / "site-1")
    assert site.uplink == "server" and site.connect == ("127.0.0.1", 8002) and site.listen is None
    job = CellNode(kits / "server", "server.J1", connect=("127.0.0.1", 9))
    assert job.uplink == "server" and job.listen is None
    agent = CellNode(kits / "site-2", "site-2--a1")
    assert agent.uplink == "server" and agent.cell.parent == "server"


@pytest.mark.parametrize(
    ("kit", "kwargs", "error", "match"),
    [
        ("admin@org-a.com", {}, ValueError, "admin kit"),
        ("site-1", {"fqcn": "site-2"}, ValueError, "site part"),
        ("site-1", {"fqcn": "site-1.J1"}, ValueError, "connect=.* is needed"),
        ("site-1", {"fqcn": "bad name"}, ValueError, "bad name"),
        ("site-1", {"listen": ("127.0.0.1",)}, TypeError, "pair"),
        ("site-1", {"listen": ("127.0.0.1", 70000)}, ValueError, "0..65535"),
        ("site-1", {"connect": ("", 1)}, ValueError, "host"),
        ("site-1", {"connect_timeout": 0}, ValueError, "connect_timeout"),
        ("site-1", {"connect_timeout": float("nan")}, ValueError, "connect_timeout"),
        ("site-1", {"backoff": 1.0}, TypeError, "Backoff"),
        ("site-1", {"uplink": "site-1"}, ValueError, "own uplink"),
    ],
)
def test_bad_arguments_are_refused(kits, kit, kwargs, error, match):
    with pytest.raises(error, match=match):
        CellNode(kits / kit, **kwargs)


def test_missing_kit_is_a_provision_error(tmp_path):
    with pytest.raises(ProvisionError, match="not a startup kit"):
        CellNode(tmp_path)


async def test_node_cannot_run_twice_or_start_children_when_stopped(kits):
    node = CellNode(kits / "server", listen=("127.0.0.1", 0))
    with pytest.raises(RuntimeError, match="not running"):
        await node.start_child("J1")
    async with node:
        with pytest.raises(ValueError):
            await node.start_child("bad.name")
    with pytest.raises(RuntimeError, match="already running"):
        async with node:
            pass  # pragma: no cover


def test_from_child_env(kits):
    env = {ENV_KIT: str(kits / "site-1"), ENV_FQCN: "site-1.J3", ENV_HOST: "127.0.0.1",
           ENV_PORT: "4567"}
    node = CellNode.from_child_env(env)
    assert (node.fqcn, node.uplink, node.connect, node.reconnect) == (
        "site-1.J3", "site-1", ("127.0.0.1", 4567), False)
    with pytest.raises(ValueError, match=ENV_PORT):
        CellNode.from_child_env({**env, ENV_PORT: "x"})
    with pytest.raises(ValueError, match="not started as a child"):
        CellNode.from_child_env({})


def test_child_argv_runs_cellnet_run_in_child_mode(tmp_path):
    argv = child_argv(tmp_path / "kit", "site-1.J1", 1234, workspace=tmp_path / "ws", verbose=True)
    assert argv[1:3] == ["-m", "cellnet.run"]
    assert argv[argv.index("--child") + 1] == "site-1.J1"
    assert argv[argv.index("--port") + 1] == "1234" and argv[-1] == "-v"


async def test_statistics_dict_is_json_ready():
    async with Cell("site-1") as cell:
        cell.register_request_cb("c", "t", lambda m: b"x")
        await cell.send_request("site-1", "c", "t", b"abc")
        doc = statistics_dict(cell.statistics())
    again = json.loads(json.dumps(doc, allow_nan=False))
    assert again["channels"]["c"]["messages_in"] >= 1 and again["requests_completed"] == 1
    assert all(isinstance(k, str) for k in again["latency"])


def test_json_payload_rejects_non_json():
    assert json_payload(Message(None, b'{"a": 1}')) == {"a": 1}
    with pytest.raises(ValueError, match="no JSON"):
        json_payload(Message(None, None))
    with pytest.raises(ValueError, match="not UTF-8 JSON"):
        json_payload(Message(None, b"\xff"))
    with pytest.raises(TypeError):
        json_payload(b"{}")


def test_workspace_logs_and_audit(tmp_path):
    ws = Workspace(tmp_path / "ws")
    with ws.open_logs():
        logging.getLogger("cellnet.node").info("hello log")
        audit("link-up", peer="site-1", reason="two words")
        _audit_refusal("h:1", IdentityMismatchError("announced site-2, certificate says site-1"))
    logging.getLogger("cellnet.node").info("after close")
    log_text = ws.log_path.read_text()
    audit_lines = ws.audit_path.read_text().splitlines()
    assert "hello log" in log_text and "after close" not in log_text
    assert audit_lines[0].endswith('link-up peer=site-1 reason="two words"')
    assert "auth-refused address=h:1 error=IdentityMismatchError" in audit_lines[1]
    assert "certificate says site-1" in audit_lines[1]
    assert len(audit_lines) == 2
    assert ws.subdir("J1").root == ws.root / "J1"
    for bad in ("", "..", "a/b"):
        with pytest.raises(ValueError):
            ws.subdir(bad)
    with pytest.raises(TypeError):
        Workspace(3)


def test_workspace_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "f").write_text("")
    with pytest.raises(NotADirectoryError, match="not a directory"):
        Workspace(tmp_path / "f").create()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["{kits}/nope"], "not a startup kit"),
        (["{kits}/site-1", "--connect-timeout", "0"], "connect-timeout"),
        (["{kits}/site-1", "--port", "70000"], "not a port"),
        (["{kits}/site-1", "--child", "site-1.J1"], "--child needs --port"),
        (["{kits}/site-1", "--child", "site-2.J1", "--port", "5"], "site part"),
    ],
)
def test_run_main_argument_errors_exit_2(kits, tmp_path, capsys, argv, message):
    argv = [a.format(kits=kits) for a in argv] + ["--workspace", str(tmp_path / "ws")]
    assert run_main(argv) == 2
    assert message in capsys.readouterr().err


def test_run_main_gives_up_with_exit_3(kits, tmp_path, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    status = run_main([str(kits / "site-1"), "--port", str(port), "--connect-timeout", "0.3",
                       "--workspace", str(tmp_path / "ws")])
    err = capsys.readouterr().err
    assert status == 3 and "unreachable for 0.3 s" in err
    assert f"cannot reach server at 127.0.0.1:{port} (attempt 1)" in err
