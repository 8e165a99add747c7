"""FQCN (fully qualified cell name) parsing, validation and tree relations; pure str functions.

A FQCN is a dot-joined path naming one cell: ``server``, ``site-1``,
``server.<job_id>``, ``site-1.<job_id>``, ``site-1.<job_id>.<agent>``. The
first part is the *site* (the root name). The cell tree is ``server`` <- sites
<- job cells <- agents, so every root other than ``server`` hangs under
``server`` even though its name does not say so.

Rules (checked by :func:`validate`, which every other function applies):

* parts are 1..``MAX_PART_LEN`` characters from ``[A-Za-z0-9_-]`` (ASCII only);
* at most ``MAX_PARTS`` parts and ``MAX_FQCN_LEN`` characters in all;
* no whitespace, no empty parts (leading, trailing or doubled ``.``).

``@`` is deliberately **not** allowed. Admin identities are e-mail addresses
(``admin@org.com``) and almost always contain ``.``, the separator, so they can
never be used verbatim as a cell name; allowing ``@`` would only make the
mistake look like it works for some addresses. The admin identity is bound to
a link through its certificate, not through the FQCN.

These functions sit on the message path, so the happy path is one compiled
regex match cached by :func:`functools.lru_cache`; the slow, precise diagnosis
runs only when the name is invalid.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache

from cellnet.errors import FQCNError

SEPARATOR = "."
SERVER = "server"

MAX_PART_LEN = 64
MAX_FQCN_LEN = 255
MAX_PARTS = 8

_PART_CHARS = r"A-Za-z0-9_\-"
_PART_RE = re.compile(f"[{_PART_CHARS}]{{1,{MAX_PART_LEN}}}")
_FQCN_RE = re.compile(
    f"[{_PART_CHARS}]{{1,{MAX_PART_LEN}}}"
    f"(?:\\.[{_PART_CHARS}]{{1,{MAX_PART_LEN}}}){{0,{MAX_PARTS - 1}}}"
)
_BAD_CHAR_RE = re.compile(f"[^{_PART_CHARS}.]")
_ALLOWED = "letters, digits, '_' and '-'"


def _show(text: str, limit: int = 40) -> str:
    """Quote a name for an error message, shortened when very long."""
    if len(text) > limit:
        return repr(text[:limit] + "...")
    return repr(text)


def _require_str(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise FQCNError(f"{what} must be a str, got {type(value).__name__}")
    return value


def _describe_char(ch: str) -> str:
    if ch.isspace():
        return f"whitespace {ch!r}"
    return f"character {ch!r}"


def _bad_char(text: str, label: str, allowed: str) -> FQCNError | None:
    """The error for the first disallowed character in ``text``, or None if there is none."""
    bad = _BAD_CHAR_RE.search(text)
    if bad is None:
        return None
    return FQCNError(
        f"{label}: {_describe_char(bad.group())} at index {bad.start()} is not "
        f"allowed (only {allowed})"
    )


def _diagnose(fqcn: str) -> FQCNError:
    """Explain precisely why ``fqcn`` (which failed the fast check) is invalid."""
    shown = _show(fqcn)
    if not fqcn:
        return FQCNError("FQCN is empty")
    if len(fqcn) > MAX_FQCN_LEN:
        return FQCNError(
            f"FQCN {shown} is {len(fqcn)} characters long; the limit is {MAX_FQCN_LEN}"
        )
    bad = _bad_char(fqcn, f"FQCN {shown}", f"{_ALLOWED}, parts joined by '.'")
    if bad is not None:
        return bad
    parts = fqcn.split(SEPARATOR)
    offset = 0
    for i, part in enumerate(parts):
        if not part:
            if i == 0:
                where = "leading '.'"
            elif i == len(parts) - 1:
                where = "trailing '.'"
            else:
                where = f"double '.' at index {offset - 1}"
            return FQCNError(f"FQCN {shown}: empty part ({where})")
        if len(part) > MAX_PART_LEN:
            return FQCNError(
                f"FQCN {shown}: part {i} ({_show(part, 20)}) is {len(part)} characters "
                f"long; the limit is {MAX_PART_LEN}"
            )
        offset += len(part) + 1
    if len(parts) > MAX_PARTS:
        return FQCNError(f"FQCN {shown} has {len(parts)} parts; the limit is {MAX_PARTS}")
    return FQCNError(f"FQCN {shown} is invalid")  # pragma: no cover - regex and checks agree


@lru_cache(maxsize=8192)
def _parts(fqcn: str) -> tuple[str, ...]:
    if len(fqcn) > MAX_FQCN_LEN or _FQCN_RE.fullmatch(fqcn) is None:
        raise _diagnose(fqcn)
    return tuple(fqcn.split(SEPARATOR))


def validate(fqcn: str) -> str:
    """Return ``fqcn`` unchanged if it is a valid FQCN, else raise :class:`FQCNError`."""
    _parts(_require_str(fqcn, "FQCN"))
    return fqcn


def validate_part(name: str) -> str:
    """Return ``name`` if it is a valid single FQCN part (no separator), else raise."""
    _require_str(name, "FQCN part")
    if _PART_RE.fullmatch(name) is not None:
        return name
    shown = _show(name)
    if not name:
        raise FQCNError("FQCN part is empty")
    bad = _bad_char(name, f"FQCN part {shown}", _ALLOWED)
    if bad is not None:
        raise bad
    sep = name.find(SEPARATOR)
    if sep >= 0:
        raise FQCNError(
            f"FQCN part {shown}: separator '.' at index {sep}; a part cannot contain it"
        )
    raise FQCNError(
        f"FQCN part {shown} is {len(name)} characters long; the limit is {MAX_PART_LEN}"
    )


def split(fqcn: str) -> tuple[str, ...]:
    """The parts of a valid FQCN, root first."""
    return _parts(_require_str(fqcn, "FQCN"))


def join(parts: Iterable[str]) -> str:
    """Join parts into a FQCN; every part and the result are validated."""
    if isinstance(parts, str):
        raise FQCNError(f"join takes a sequence of parts, not the str {_show(parts)}")
    items = [validate_part(p) for p in parts]
    if not items:
        raise FQCNError("cannot join an empty sequence of parts")
    return validate(SEPARATOR.join(items))


def parent(fqcn: str) -> str | None:
    """The FQCN one level up, or None for a root name (see :func:`tree_parent`)."""
    validate(fqcn)
    head, sep, _ = fqcn.rpartition(SEPARATOR)
    return head if sep else None


def tree_parent(fqcn: str) -> str | None:
    """The parent in the cell tree: like :func:`parent`, but a root other than
    ``server`` hangs under ``server``; ``server`` itself has none."""
    up = parent(fqcn)
    if up is not None:
        return up
    return None if fqcn == SERVER else SERVER


def site(fqcn: str) -> str:
    """The root part (the site name, or ``server``)."""
    return split(fqcn)[0]


def depth(fqcn: str) -> int:
    """Number of parts: 1 for a root name."""
    return len(split(fqcn))


def is_root(fqcn: str) -> bool:
    """True for a single-part name such as ``server`` or ``site-1``."""
    return depth(fqcn) == 1


def is_ancestor(ancestor: str, descendant: str, *, strict: bool = True) -> bool:
    """True if ``ancestor`` is a prefix path of ``descendant`` by FQCN.

    With ``strict=False`` a name also counts as its own ancestor. Only the name
    relation is checked: ``server`` is not an ancestor of ``site-1`` here even
    though it is its parent in the cell tree.
    """
    validate(ancestor)
    validate(descendant)
    if ancestor == descendant:
        return not strict
    return descendant.startswith(ancestor + SEPARATOR)


def common_ancestor(a: str, b: str) -> str | None:
    """The deepest FQCN that is ancestor-or-self of both, or None when the roots
    differ (then the route between them goes through the server)."""
    pa, pb = split(a), split(b)
    n = 0
    for x, y in zip(pa, pb, strict=False):
        if x != y:
            break
        n += 1
    return SEPARATOR.join(pa[:n]) if n else None


def is_same_site(a: str, b: str) -> bool:
    """True when both names have the same root part."""
    return site(a) == site(b)


@lru_cache(maxsize=4096)
def owner_site(fqcn: str) -> str:
    """The site that vouches for a cell: its root part without an agent suffix.

    ``site-1.J1.a`` and ``site-1--probe`` both belong to ``site-1`` (whose
    certificate they run with); used to check who may originate a message.
    """
    return validate(fqcn).split(SEPARATOR, 1)[0].split("--", 1)[0]


def agent_site_fqcn(site_name: str, agent_id: str, job_id: str | None = None) -> str:
    """The FQCN of an external agent, as the reference ``client.defs`` builds it.

    Without a job id (``None`` or empty) the agent is a root cell named
    ``<site>--<agent>``; with one it is ``<site>.<job_id>.<agent>``.
    """
    validate_part(_require_str(site_name, "site name"))
    validate_part(_require_str(agent_id, "agent id"))
    if job_id is None or job_id == "":
        return validate_part(f"{site_name}--{agent_id}")
    return join([site_name, _require_str(job_id, "job id"), agent_id])
