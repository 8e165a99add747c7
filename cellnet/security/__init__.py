"""Security: provisioning (project CA, startup kits), TLS 1.3 contexts, identity binding."""

from __future__ import annotations

from cellnet.security.identity import identity_from_cert
from cellnet.security.kit import StartupKit
from cellnet.security.names import Identity, Kind, Role
from cellnet.security.project import Project, ServerSpec, load_project, parse_project_text
from cellnet.security.provision import KitResult, ProvisionResult, provision, provision_main
from cellnet.security.tls import classify_ssl_error, client_context, server_context, verify_peer

__all__ = [
    "Identity",
    "Kind",
    "KitResult",
    "Project",
    "ProvisionResult",
    "Role",
    "ServerSpec",
    "StartupKit",
    "classify_ssl_error",
    "client_context",
    "identity_from_cert",
    "load_project",
    "parse_project_text",
    "provision",
    "provision_main",
    "server_context",
    "verify_peer",
]
