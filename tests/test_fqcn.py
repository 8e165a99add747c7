"""FQCN validation, parsing and tree relations."""

from __future__ import annotations

import re
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cellnet import fqcn
from cellnet.errors import CellnetError, FQCNError

JOB = "8f2c1a9e-3b7d-4c51-9e0a-2d6f4b8c1e73"
PART_CHARS = string.ascii_letters + string.digits + "_-"

VALID = [
    "server",
    "site-1",
    f"server.{JOB}",
    f"site-1.{JOB}",
    f"site-1.{JOB}.site-1--a1",
    "a",
    "x" * fqcn.MAX_PART_LEN,
    ".".join(["p"] * fqcn.MAX_PARTS),
    ".".join(["y" * 63] * 4),  # exactly MAX_FQCN_LEN characters
    "Site_2.JOB-9",
]

INVALID = [
    ("", r"FQCN is empty"),
    (".site-1", r"empty part \(leading '\.'\)"),
    ("site-1.", r"empty part \(trailing '\.'\)"),
    ("site-1..job", r"empty part \(double '\.' at index 6\)"),
    (".", r"empty part \(leading '\.'\)"),
    ("site 1", r"whitespace ' ' at index 4"),
    (" site-1", r"whitespace ' ' at index 0"),
    ("site-1\n", r"whitespace '\\n' at index 6"),
    ("site-1.j\tb", r"whitespace '\\t' at index 8"),
    ("site/1", r"character '/' at index 4 is not allowed"),
    ("admin@org", r"character '@' at index 5"),
    ("sité", r"character 'é' at index 3"),
    ("site-1.J:1", r"character ':' at index 8"),
    ("a." + "b" * 65, r"part 1 \('b+\.\.\.'\) is 65 characters long; the limit is 64"),
    (".".join(["p"] * 9), r"has 9 parts; the limit is 8"),
    (".".join(["y" * 63] * 4) + "z", r"is 256 characters long; the limit is 255"),
]


@pytest.mark.parametrize("name", VALID)
def test_valid_names_are_returned_unchanged(name):
    assert fqcn.validate(name) is name


@pytest.mark.parametrize(("name", "message"), INVALID)
def test_invalid_names_say_exactly_what_is_wrong(name, message):
    with pytest.raises(FQCNError, match=message):
        fqcn.validate(name)
    with pytest.raises(FQCNError, match=message):  # failures are not cached as successes
        fqcn.split(name)


def test_fqcn_error_is_typed():
    assert issubclass(FQCNError, CellnetError)
    assert issubclass(FQCNError, ValueError)


@pytest.mark.parametrize("value", [None, 3, b"server", ["server"]])
def test_non_str_is_rejected(value):
    with pytest.raises(FQCNError, match="must be a str, got"):
        fqcn.validate(value)
    with pytest.raises(FQCNError, match="must be a str"):
        fqcn.split(value)


def test_long_names_are_shortened_in_messages():
    with pytest.raises(FQCNError) as info:
        fqcn.validate("q" * 1000)
    assert len(str(info.value)) < 150


def test_validate_part():
    assert fqcn.validate_part("site-1--a1") == "site-1--a1"
    with pytest.raises(FQCNError, match="part is empty"):
        fqcn.validate_part("")
    with pytest.raises(FQCNError, match=r"separator '\.' at index 6"):
        fqcn.validate_part("site-1.J")
    with pytest.raises(FQCNError, match="whitespace ' ' at index 1"):
        fqcn.validate_part("a b")
    with pytest.raises(FQCNError, match="65 characters long; the limit is 64"):
        fqcn.validate_part("z" * 65)
    with pytest.raises(FQCNError, match="must be a str"):
        fqcn.validate_part(7)


def test_split_and_join():
    assert fqcn.split(f"site-1.{JOB}.ag") == ("site-1", JOB, "ag")
    assert fqcn.split("server") == ("server",)
    assert fqcn.join(["site-1", JOB]) == f"site-1.{JOB}"
    assert fqcn.join(("server",)) == "server"
    assert fqcn.join(p for p in ["a", "b"]) == "a.b"


@pytest.mark.parametrize(
    ("parts", "message"),
    [
        ([], "empty sequence"),
        (["a", ""], "part is empty"),
        (["a", "b.c"], "separator"),
        (["a"] * 9, "9 parts"),
        (["y" * 64] * 4, "259 characters long"),
        ("site-1", "not the str"),
    ],
)
def test_join_validates(parts, message):
    with pytest.raises(FQCNError, match=message):
        fqcn.join(parts)


def test_parent_site_depth():
    leaf = f"site-1.{JOB}.ag"
    assert fqcn.parent(leaf) == f"site-1.{JOB}"
    assert fqcn.parent(f"site-1.{JOB}") == "site-1"
    assert fqcn.parent("site-1") is None
    assert fqcn.parent("server") is None
    assert fqcn.site(leaf) == "site-1"
    assert fqcn.site("server") == "server"
    assert [fqcn.depth(n) for n in ("server", "site-1", leaf)] == [1, 1, 3]
    assert fqcn.is_root("site-1") and not fqcn.is_root(leaf)
    with pytest.raises(FQCNError):
        fqcn.parent("a..b")


def test_tree_parent_puts_sites_under_the_server():
    assert fqcn.tree_parent("site-1") == "server"
    assert fqcn.tree_parent("site-1--a1") == "server"
    assert fqcn.tree_parent("server") is None
    assert fqcn.tree_parent(f"server.{JOB}") == "server"
    assert fqcn.tree_parent(f"site-2.{JOB}") == "site-2"


def test_is_ancestor():
    assert fqcn.is_ancestor("site-1", f"site-1.{JOB}.ag")
    assert fqcn.is_ancestor(f"site-1.{JOB}", f"site-1.{JOB}.ag")
    assert not fqcn.is_ancestor("site-1", "site-1")
    assert fqcn.is_ancestor("site-1", "site-1", strict=False)
    assert not fqcn.is_ancestor(f"site-1.{JOB}.ag", "site-1")
    assert not fqcn.is_ancestor("site-1", "site-10.J")  # prefix, but not at a part boundary
    assert not fqcn.is_ancestor("server", "site-1")  # name relation only
    with pytest.raises(FQCNError):
        fqcn.is_ancestor("site-1.", "site-1.J")


def test_common_ancestor():
    assert fqcn.common_ancestor("site-1.J.a", "site-1.J.b") == "site-1.J"
    assert fqcn.common_ancestor("site-1.J.a", "site-1.K") == "site-1"
    assert fqcn.common_ancestor("site-1.J", "site-1.J") == "site-1.J"
    assert fqcn.common_ancestor("site-1", "site-1.J.a") == "site-1"
    assert fqcn.common_ancestor("site-1.J", "site-2.J") is None
    assert fqcn.common_ancestor("server.J", "site-1.J") is None
    assert fqcn.common_ancestor("site-1", "site-10") is None


def test_is_same_site():
    assert fqcn.is_same_site("site-1", f"site-1.{JOB}.ag")
    assert not fqcn.is_same_site("site-1.J", "site-10.J")
    with pytest.raises(FQCNError):
        fqcn.is_same_site("site-1", "")


def test_agent_site_fqcn_like_the_reference():
    assert fqcn.agent_site_fqcn("site-1", "a1") == "site-1--a1"
    assert fqcn.agent_site_fqcn("site-1", "a1", None) == "site-1--a1"
    assert fqcn.agent_site_fqcn("site-1", "a1", "") == "site-1--a1"  # reference: `if not job_id`
    assert fqcn.agent_site_fqcn("site-1", "a1", JOB) == f"site-1.{JOB}.a1"
    assert fqcn.tree_parent(fqcn.agent_site_fqcn("site-1", "a1", JOB)) == f"site-1.{JOB}"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("site-1", ""), "part is empty"),
        (("", "a1"), "part is empty"),
        (("site.1", "a1"), "separator"),
        (("site-1", "a 1"), "whitespace"),
        (("site-1", "a1", "J.2"), "separator"),
        (("site-1", "a1", 5), "job id must be a str"),
        ((None, "a1"), "site name must be a str"),
        (("s" * 40, "a" * 30), "72 characters long; the limit is 64"),
    ],
)
def test_agent_site_fqcn_validates(args, message):
    with pytest.raises(FQCNError, match=message):
        fqcn.agent_site_fqcn(*args)


parts_st = st.text(alphabet=PART_CHARS, min_size=1, max_size=fqcn.MAX_PART_LEN)


@settings(max_examples=150)
@given(st.lists(parts_st, min_size=1, max_size=fqcn.MAX_PARTS))
def test_join_split_round_trip(parts):
    name = ".".join(parts)
    if len(name) > fqcn.MAX_FQCN_LEN:
        with pytest.raises(FQCNError, match="characters long"):
            fqcn.join(parts)
        return
    assert fqcn.join(parts) == name
    assert fqcn.split(name) == tuple(parts)
    assert fqcn.depth(name) == len(parts)
    assert fqcn.site(name) == parts[0]
    if len(parts) > 1:
        assert fqcn.is_ancestor(fqcn.parent(name), name)
        assert fqcn.common_ancestor(name, fqcn.parent(name)) == fqcn.parent(name)


_REFERENCE_RE = re.compile(r"[A-Za-z0-9_-]{1,64}(\.[A-Za-z0-9_-]{1,64}){0,7}")


@settings(max_examples=300)
@given(st.text(alphabet=PART_CHARS + ". \t@/é\x00", max_size=80))
def test_validate_agrees_with_the_rules(text):
    ok = bool(_REFERENCE_RE.fullmatch(text)) and len(text) <= fqcn.MAX_FQCN_LEN
    try:
        fqcn.validate(text)
    except FQCNError as exc:
        assert not ok, exc
        assert str(exc)
    else:
        assert ok
