"""Sessions: a site logs in to the server and gets a token plus the server's session id (SSID).

The server's :class:`SessionTable` issues one token per client name (a new
login replaces the old token, which becomes stale) under an SSID drawn
when the table is created, so a restarted server has a new SSID and every
old session is stale.  The client name is the site of the *certificate*
(the caller passes the site part of the verified origin FQCN), never a
name the site chose to announce.

A job cell judges the cmi headers of what it receives with a
:class:`SessionCheck`: an unknown client name or another project is
``authentication_error`` (reference ``unauthenticated``); a stale token or
SSID is ``invalid_session``.  Both map through ``RC_TABLE``.
"""

from __future__ import annotations

import secrets
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from cellnet.defs import CellReturnCode, CMIHeader
from cellnet.errors import AuthError

__all__ = ["SERVER_CLIENT", "Session", "SessionCheck", "SessionTable", "Verdict", "cmi_headers"]

#: The client name the server side uses in cmi headers.
SERVER_CLIENT = "server"
H = CMIHeader


@dataclass(frozen=True)
class Session:
    """Who is speaking: client name, its token, the server's SSID, the project."""

    client_name: str
    token: str
    ssid: str
    project: str

    def to_dict(self) -> dict[str, str]:
        return {"client_name": self.client_name, "token": self.token, "ssid": self.ssid,
                "project": self.project}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Session:
        try:
            return cls(str(d["client_name"]), str(d["token"]), str(d["ssid"]), str(d["project"]))
        except KeyError as exc:
            raise ValueError(f"session record lacks {exc}") from None


@dataclass(frozen=True)
class Verdict:
    """Why a message is refused: a cell return code and a reason."""

    code: CellReturnCode
    reason: str


def cmi_headers(session: Session, job_id: str | None) -> dict[str, Any]:
    """The cmi headers a runtime message from ``session`` carries."""
    headers = {
        H.HEADER_CLIENT_NAME.value: session.client_name,
        H.HEADER_CLIENT_TOKEN.value: session.token,
        H.HEADER_SSID.value: session.ssid,
        H.HEADER_PROJECT_NAME.value: session.project,
    }
    if job_id is not None:
        headers[H.HEADER_JOB_ID.value] = job_id
    return headers


class SessionCheck:
    """Judge cmi headers against known tokens (``None``: that client needs no token)."""

    def __init__(self, project: str, ssid: str, tokens: Mapping[str, str | None],
                 job_id: str | None = None) -> None:
        self.project, self.ssid, self.job_id = project, ssid, job_id
        self.tokens = dict(tokens)

    def check(self, headers: Mapping[str, Any]) -> Verdict | None:
        """None when the headers belong to a live session, else the refusal."""
        name = headers.get(H.HEADER_CLIENT_NAME.value)
        if headers.get(H.HEADER_PROJECT_NAME.value) != self.project:
            return Verdict(CellReturnCode.AUTHENTICATION_ERROR,
                           f"message is not from project {self.project!r}")
        if not isinstance(name, str) or name not in self.tokens:
            return Verdict(CellReturnCode.AUTHENTICATION_ERROR, f"unknown client {name!r}")
        if headers.get(H.HEADER_SSID.value) != self.ssid:
            return Verdict(CellReturnCode.INVALID_SESSION,
                           f"client {name!r}: stale server session id")
        want = self.tokens[name]
        if want is not None and headers.get(H.HEADER_CLIENT_TOKEN.value) != want:
            return Verdict(CellReturnCode.INVALID_SESSION, f"client {name!r}: stale token")
        if self.job_id is not None and headers.get(H.HEADER_JOB_ID.value) != self.job_id:
            return Verdict(CellReturnCode.INVALID_SESSION,
                           f"client {name!r}: message is for another job")
        return None


class SessionTable:
    """The server's live sessions: login issues tokens; a restart (new table) makes all stale."""

    def __init__(self, project: str, known_clients: Collection[str] | None = None,
                 ssid: str | None = None) -> None:
        self.project = project
        self.ssid = ssid or secrets.token_hex(16)
        self.known = None if known_clients is None else frozenset(known_clients)
        self._tokens: dict[str, str] = {}

    def login(self, client_name: str) -> Session:
        """A fresh token for ``client_name`` (its previous one goes stale)."""
        if not isinstance(client_name, str) or not client_name or client_name == SERVER_CLIENT:
            raise AuthError(f"{client_name!r} cannot log in as a client")
        if self.known is not None and client_name not in self.known:
            raise AuthError(f"client {client_name!r} is not part of project {self.project!r}")
        token = secrets.token_hex(16)
        self._tokens[client_name] = token
        return Session(client_name, token, self.ssid, self.project)

    def logout(self, client_name: str) -> None:
        self._tokens.pop(client_name, None)

    @property
    def clients(self) -> tuple[str, ...]:
        return tuple(sorted(self._tokens))

    def server_session(self) -> Session:
        return Session(SERVER_CLIENT, "", self.ssid, self.project)

    def checker(self, clients: Collection[str] | None = None,
                job_id: str | None = None) -> SessionCheck:
        """A check for the current tokens of ``clients`` (all logged-in clients by default)."""
        names = self._tokens if clients is None else clients
        missing = [c for c in names if c not in self._tokens]
        if missing:
            raise AuthError(f"client(s) not logged in: {', '.join(sorted(missing))}")
        return SessionCheck(self.project, self.ssid, {c: self._tokens[c] for c in names}, job_id)

    def check(self, headers: Mapping[str, Any]) -> Verdict | None:
        return self.checker().check(headers)
