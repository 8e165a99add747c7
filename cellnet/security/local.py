"""A throw-away project on this machine: the project file text and its kits in one call.

Used by tests, benchmarks and (later) ``cellnet simulate``: every participant
gets real certificates from a fresh CA, exactly as ``cellnet provision`` makes
them, with the server on a loopback address.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from cellnet.security.provision import provision


def local_project_text(
    name: str,
    sites: Sequence[str] = ("site-1", "site-2"),
    *,
    host: str = "127.0.0.1",
    fl_port: int = 8002,
    admin_port: int = 8003,
    admins: Sequence[tuple[str, str, str]] = (),
) -> str:
    """TOML of a project with ``sites`` (org ``org-<n>`` each) and ``admins`` (name, org, role)."""
    lines = [
        f'name = "{name}"', "", "[server]", f'host = "{host}"',
        f"fl_port = {fl_port}", f"admin_port = {admin_port}",
    ]
    for n, site in enumerate(sites, 1):
        lines += ["", "[[sites]]", f'name = "{site}"', f'org = "org-{n}"']
    for admin, org, role in admins:
        lines += ["", "[[admins]]", f'name = "{admin}"', f'org = "{org}"', f'role = "{role}"']
    return "\n".join(lines) + "\n"


def provision_local(root: str | os.PathLike[str], name: str = "local",
                    sites: Sequence[str] = ("site-1", "site-2"), **kwargs) -> Path:
    """Write ``<root>/project.toml`` and provision it into ``<root>/kits``; return that folder.

    Keyword arguments go to :func:`local_project_text` (host, ports, admins).
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    project = root / "project.toml"
    project.write_text(local_project_text(name, sites, **kwargs))
    provision(project, root / "kits")
    return root / "kits"
