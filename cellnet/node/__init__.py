"""Cells on the network: CellNode (listen / connect / re-connect / child cells) and built-ins."""

from __future__ import annotations

from cellnet.node._builtin import NODE_CHANNEL, NodeTopic, json_payload, statistics_dict
from cellnet.node._children import ChildCell
from cellnet.node._node import CellNode

__all__ = [
    "NODE_CHANNEL",
    "CellNode",
    "ChildCell",
    "NodeTopic",
    "json_payload",
    "statistics_dict",
]
