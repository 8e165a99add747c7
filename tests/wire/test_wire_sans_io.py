"""The message and wire layers stay sans-IO: they never import trio, ssl or socket."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import cellnet

FORBIDDEN = {"trio", "ssl", "socket", "asyncio", "selectors"}
ROOT = pathlib.Path(cellnet.__file__).resolve().parent
SOURCES = [ROOT / "message.py", *sorted((ROOT / "wire").glob("*.py"))]


def test_importing_them_loads_no_io_module():
    code = (
        "import sys\n"
        "import cellnet.message, cellnet.wire, cellnet.wire.codec, cellnet.wire.decoder\n"
        f"print(sorted(m for m in {sorted(FORBIDDEN)!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_sources_have_no_io_imports():
    assert len(SOURCES) >= 6
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            for name in names:
                assert name.split(".")[0] not in FORBIDDEN, f"{path.name} imports {name}"
