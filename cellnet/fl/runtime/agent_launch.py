"""Start a training script for a job cell: ``python -m cellnet.fl.runtime.agent_launch``.

``agent_launch --cwd DIR --stderr FILE -- COMMAND...`` changes to ``DIR``,
appends its standard error to ``FILE`` and *replaces itself* with
``COMMAND`` (``exec``: same process id, so the job cell supervises and
signals the script itself).  A leading ``python``/``python3`` becomes this
interpreter, so the script sees the same environment (and cellnet) as the
job cell.  The job cell reads ``FILE``'s tail when the script fails, and
sends it to the server.
"""

from __future__ import annotations

import argparse
import os
import sys

__all__ = ["main", "resolve_command"]

PYTHON_NAMES = frozenset({"python", "python3"})


def resolve_command(argv: list[str]) -> list[str]:
    """``argv`` with a leading bare ``python``/``python3`` replaced by this interpreter."""
    if not argv:
        raise ValueError("the training command is empty")
    if argv[0] in PYTHON_NAMES:
        return [sys.executable, *argv[1:]]
    return list(argv)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cellnet.fl.runtime.agent_launch")
    parser.add_argument("--cwd", required=True)
    parser.add_argument("--stderr", required=True)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    fd = os.open(args.stderr, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(fd, 2)
    os.close(fd)
    try:
        command = resolve_command(command)
        os.chdir(args.cwd)
        os.execvp(command[0], command)
    except (OSError, ValueError) as exc:
        print(f"cannot start the training command {command!r}: {exc}", file=sys.stderr)
        return 127
    return 0  # not reached: execvp does not return


if __name__ == "__main__":
    sys.exit(main())
