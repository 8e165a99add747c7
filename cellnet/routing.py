"""Routing as a pure function: (my FQCN, target, my links) -> next hop, or no route.

Theory of operation
-------------------
A cell knows only its own name and the names of the cells it has a live link
to. :func:`next_hop` picks, in order:

1. the target itself, if linked (direct link, including peer-to-peer ones);
2. the deepest linked cell that is an ancestor of the target and no shallower
   than the common ancestor of me and the target (going *down*, or jumping
   straight to the target's branch over a peer link: ``server`` reaches
   ``site-1.J`` through its link to ``site-1``);
3. my parent in the cell tree, if linked and the target is not below me
   (``site-1.J`` -> ``site-1`` -> ``server``; a root other than ``server`` hangs
   under ``server``; ``server`` has no parent);
4. otherwise no route (``None``).

Why this cannot loop (with tree-derived parents): let *c* be the number of
leading parts a cell shares with the target. Step 2 moves to a cell with a
larger *c*, or the same *c* at a smaller depth; step 3 keeps *c* and lowers
the depth, except the single move root -> ``server``, which is never undone
because ``server`` only moves down. Once a cell is an ancestor of the target
only downward moves are allowed. So every walk ends, and the longest one (up
from a deepest cell to its root, over ``server`` to another root, down to a
deepest cell) takes 2 x ``fqcn.MAX_PARTS`` hops, which ``MAX_HOPS`` covers; the
hop-limit header still guards against stale or inconsistent link tables.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping

from cellnet import fqcn as _fqcn
from cellnet.errors import LimitExceededError

_SEP = _fqcn.SEPARATOR
_split = _fqcn.split

MAX_HOPS = 16
"""Most hops a message may take; the router drops it when its hop count header reaches this."""


def _shared_len(a: tuple[str, ...], b: tuple[str, ...]) -> int:
    """Number of leading parts ``a`` and ``b`` have in common."""
    if a[0] != b[0]:
        return 0  # the common case off-site: decided by one comparison
    n = 1
    limit = min(len(a), len(b))
    while n < limit and a[n] == b[n]:
        n += 1
    return n


def next_hop(
    me: str, target: str, links: Collection[str], *, parent: str | None = None
) -> str | None:
    """The linked cell to hand a message for ``target`` to, or None if there is no route.

    ``links`` holds the FQCNs this cell has a live link to (a set gives O(1)
    lookups; only ``in`` is used, so the cost is O(depth of target) lookups).
    ``parent`` overrides the tree parent derived from ``me`` (e.g. an agent
    ``site-1--a1`` attached to ``site-1``). Returns ``me`` when the target is
    this cell (deliver locally).
    """
    mine = _split(me)
    theirs = _split(target)
    if target == me:
        return me
    if target in links:
        return target
    shared = _shared_len(mine, theirs)
    # Deepest linked strict ancestor of the target that is not behind me; the
    # prefixes are cut from the string (cheaper than re-joining parts).
    end = len(target)
    for _ in range(len(theirs) - max(shared, 1)):
        end = target.rfind(_SEP, 0, end)
        hop = target[:end]
        if hop != me and hop in links:
            return hop
    if shared == len(mine):
        return None  # the target is below me but no link leads down to it
    if parent is not None:
        up: str | None = _fqcn.validate(parent)
    elif len(mine) > 1:
        up = me[: me.rfind(_SEP)]
    else:
        up = None if me == _fqcn.SERVER else _fqcn.SERVER
    if up is not None and up != me and up in links:
        return up
    return None


def trace_route(
    source: str,
    target: str,
    links_of: Mapping[str, Collection[str]] | Callable[[str], Collection[str]],
    *,
    parents: Mapping[str, str] | None = None,
    max_hops: int = MAX_HOPS,
) -> list[str] | None:
    """Walk :func:`next_hop` from ``source`` to ``target`` over a whole topology.

    ``links_of`` maps each cell to its links (a cell missing from a mapping has
    none). Returns the path ``[source, ..., target]``, or None when some cell
    has no route. Raises :class:`LimitExceededError` if the walk would take
    more than ``max_hops`` hops (only possible with inconsistent ``parents``).
    For diagnostics and tests; a running cell calls :func:`next_hop` itself.
    """
    if callable(links_of):
        get_links = links_of
    else:
        table = links_of

        def get_links(cell: str) -> Collection[str]:
            return table.get(cell, ())

    overrides = parents or {}
    path = [source]
    here = source
    while here != target:
        if len(path) > max_hops:
            raise LimitExceededError(
                f"route {source!r} -> {target!r} exceeds {max_hops} hops: {' -> '.join(path)}"
            )
        hop = next_hop(here, target, get_links(here), parent=overrides.get(here))
        if hop is None:
            return None
        path.append(hop)
        here = hop
    return path
