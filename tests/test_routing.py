"""Routing as a pure function, from a table of cases and by walking whole topologies."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cellnet import fqcn
from cellnet.errors import FQCNError, LimitExceededError
from cellnet.routing import MAX_HOPS, next_hop, trace_route

# A small federation: server and two sites, one job J on all three, an agent in
# site-1's job cell, a job-less agent attached to site-1, and a peer-to-peer
# link between the two sites' job cells.
TOPOLOGY: dict[str, set[str]] = {
    "server": {"site-1", "site-2", "server.J"},
    "server.J": {"server"},
    "site-1": {"server", "site-1.J", "site-1--a1"},
    "site-1.J": {"site-1", "site-1.J.ag", "site-2.J"},
    "site-1.J.ag": {"site-1.J"},
    "site-1--a1": {"site-1"},
    "site-2": {"server", "site-2.J"},
    "site-2.J": {"site-2", "site-1.J"},
}
PARENTS = {"site-1--a1": "site-1"}

CASES = [
    # (me, target, expected next hop), links from TOPOLOGY, parent from PARENTS
    ("site-1.J", "server.J", "site-1"),  # job cell -> its site
    ("site-1", "server.J", "server"),  # site -> server
    ("server", "server.J", "server.J"),  # server -> its job cell (direct)
    ("server.J", "site-1.J", "server"),  # server job cell -> up
    ("server", "site-1.J", "site-1"),  # server -> down through the site root
    ("server", "site-1.J.ag", "site-1"),
    ("site-1", "site-1.J.ag", "site-1.J"),  # down the subtree
    ("site-1.J", "site-1.J.ag", "site-1.J.ag"),  # job cell -> its agent (direct)
    ("site-1.J.ag", "server.J", "site-1.J"),  # agent -> up
    ("site-1.J", "site-2.J", "site-2.J"),  # peer-to-peer direct link
    ("site-1.J", "site-2.J.x", "site-2.J"),  # peer link to the target's ancestor
    ("site-2.J", "site-1.J.ag", "site-1.J"),  # peer link, then down
    ("site-1", "site-2", "server"),  # sibling sites go via the server
    ("site-1", "site-2.J", "server"),
    ("site-1--a1", "server.J", "site-1"),  # job-less agent: explicit parent
    ("site-1--a1", "site-1.J", "site-1"),
    ("server", "site-1--a1", None),  # ...but its name is a root the server has no link to
    ("site-1", "site-1--a1", "site-1--a1"),
    ("server", "site-9", None),  # unknown site
    ("server", "site-9.J", None),
    ("site-1", "site-1.Q", None),  # unknown child: never bounce up
    ("site-1.J", "site-1.J.nobody", None),
    ("server", "server.K", None),
    ("server", "server", "server"),  # self: deliver locally
    ("site-1.J.ag", "site-1.J.ag", "site-1.J.ag"),
]


@pytest.mark.parametrize(("me", "target", "expected"), CASES)
def test_next_hop_table(me, target, expected):
    assert next_hop(me, target, TOPOLOGY[me], parent=PARENTS.get(me)) == expected


@pytest.mark.parametrize(
    ("me", "target", "links", "parent", "expected"),
    [
        # shortcut to the common ancestor over a direct link
        ("site-1.J.ag", "site-1.K", {"site-1.J", "site-1"}, None, "site-1"),
        # the deepest linked ancestor of the target wins
        ("server", "site-1.J.ag", {"site-1", "site-1.J"}, None, "site-1.J"),
        # a link to my own ancestor is never used to reach something below me
        ("site-1.J", "site-1.J.x", {"site-1"}, None, None),
        # parent not linked: no route
        ("site-1.J", "server", set(), None, None),
        ("site-1", "server.J", {"site-1.J"}, None, None),
        # a job-less agent without a parent override hangs under the server
        ("site-1--a1", "server.J", {"site-1"}, None, None),
        ("site-1--a1", "server.J", {"server"}, None, "server"),
        # the server has no parent
        ("server", "site-1", {"server.J"}, None, None),
        # links may be any collection
        ("site-1.J", "server", ["site-1"], None, "site-1"),
        ("site-1.J", "server", frozenset({"site-1"}), None, "site-1"),
        ("site-1.J", "server", {"site-1": object()}, None, "site-1"),
        # my own name in the link table is never a hop toward someone else
        ("site-1", "site-1.Q", {"site-1"}, None, None),
        ("site-1", "site-1.J.x", {"site-1", "site-1.J"}, None, "site-1.J"),
        ("site-1.J", "server", {"site-1.J"}, "site-1.J", None),
        # junk in the link table is never chosen
        ("site-1.J", "server", {"site-1", "..", ""}, None, "site-1"),
    ],
)
def test_next_hop_cases(me, target, links, parent, expected):
    assert next_hop(me, target, links, parent=parent) == expected


def test_next_hop_validates_names():
    with pytest.raises(FQCNError):
        next_hop("site 1", "server", {"server"})
    with pytest.raises(FQCNError):
        next_hop("site-1", "server.", {"server"})
    with pytest.raises(FQCNError, match="empty part"):
        next_hop("site-1.J", "server", {"site-1"}, parent="site-1.")


def _check_path(path, source, target, links_of):
    assert path[0] == source and path[-1] == target
    assert len(path) - 1 <= MAX_HOPS
    assert len(set(path)) == len(path), f"loop in {path}"
    for here, hop in itertools.pairwise(path):
        assert hop in links_of.get(here, ())


def test_walk_every_pair_of_the_example_topology():
    cells = sorted(TOPOLOGY)
    for source, target in itertools.product(cells, cells):
        path = trace_route(source, target, TOPOLOGY, parents=PARENTS)
        if target == "site-1--a1" and fqcn.site(source) not in ("site-1", "site-1--a1"):
            # a root-named agent is reachable only from inside its site
            assert path is None, (source, path)
            continue
        assert path is not None, (source, target)
        _check_path(path, source, target, TOPOLOGY)
    assert trace_route("site-1.J.ag", "server.J", TOPOLOGY) == [
        "site-1.J.ag",
        "site-1.J",
        "site-1",
        "server",
        "server.J",
    ]
    peer = trace_route("site-2.J", "site-1.J.ag", TOPOLOGY)
    assert peer == ["site-2.J", "site-1.J", "site-1.J.ag"]


def test_trace_route_accepts_a_callable_and_reports_no_route():
    assert trace_route("site-1", "server", lambda cell: TOPOLOGY.get(cell, ())) == [
        "site-1",
        "server",
    ]
    assert trace_route("site-1", "site-7.J", TOPOLOGY) is None
    assert trace_route("site-1", "site-1", {}) == ["site-1"]


def test_longest_walk_fits_the_hop_limit():
    assert 2 * fqcn.MAX_PARTS <= MAX_HOPS
    chain_a = [".".join(["a", *[f"x{i}" for i in range(1, k)]]) for k in range(1, 9)]
    chain_b = [".".join(["b", *[f"y{i}" for i in range(1, k)]]) for k in range(1, 9)]
    links: dict[str, set[str]] = {"server": {"a", "b"}}
    for chain in (chain_a, chain_b):
        links.setdefault(chain[0], set()).add("server")
        for up, down in itertools.pairwise(chain):
            links.setdefault(up, set()).add(down)
            links.setdefault(down, set()).add(up)
    path = trace_route(chain_a[-1], chain_b[-1], links)
    assert path is not None
    assert len(path) - 1 == 2 * fqcn.MAX_PARTS
    _check_path(path, chain_a[-1], chain_b[-1], links)


def test_inconsistent_parents_hit_the_hop_limit():
    links = {"a": {"b"}, "b": {"a"}}
    with pytest.raises(LimitExceededError, match="exceeds 16 hops"):
        trace_route("a", "c.d", links, parents={"a": "b", "b": "a"})


names_st = st.lists(
    st.builds(
        lambda root, rest: [root, *rest],
        st.sampled_from(["server", "s1", "s2", "s3"]),
        st.lists(st.sampled_from(["s1", "j", "k", "ag"]), max_size=3),
    ),
    min_size=1,
    max_size=12,
)


def _tree(name_lists):
    """A tree-consistent topology: every cell linked both ways with its tree parent."""
    cells = {"server"}
    for parts in name_lists:
        for k in range(1, len(parts) + 1):
            cells.add(".".join(parts[:k]))
    links: dict[str, set[str]] = {c: set() for c in cells}
    for c in cells:
        up = fqcn.tree_parent(c)
        if up is not None:
            links[c].add(up)
            links[up].add(c)
    return sorted(cells), links


@settings(max_examples=60, deadline=None)
@given(names_st, st.lists(st.tuples(st.integers(0, 99), st.integers(0, 99)), max_size=8))
def test_random_topologies_always_route_without_loops(name_lists, extra):
    cells, links = _tree(name_lists)
    for i, j in extra:  # random peer-to-peer links on top of the tree
        a, b = cells[i % len(cells)], cells[j % len(cells)]
        if a != b:
            links[a].add(b)
            links[b].add(a)
    for source, target in itertools.product(cells, cells):
        path = trace_route(source, target, links)
        assert path is not None, (source, target)
        _check_path(path, source, target, links)


@settings(max_examples=60, deadline=None)
@given(names_st, st.data())
def test_partial_link_tables_terminate_or_report_no_route(name_lists, data):
    cells, full = _tree(name_lists)
    # drop some links (a link may be down in one direction only)
    links = {c: {x for x in full[c] if data.draw(st.booleans())} for c in cells}
    for source, target in itertools.product(cells, cells):
        path = trace_route(source, target, links)
        if path is not None:
            _check_path(path, source, target, links)
