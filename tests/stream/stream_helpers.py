"""Helpers for the stream tests (uniquely named, not conftest): drive sender/receiver pairs."""

from __future__ import annotations

import itertools

import numpy as np

from cellnet.stream import StreamReceiver, StreamSender
from cellnet.wire import FrameDecoder


def via_wire(frame):
    """Encode ``frame`` to bytes and decode it back with the real frame decoder."""
    dec = FrameDecoder()
    dec.receive_data(b"".join(bytes(s) for s in frame.encode()))
    return dec.next_frame()


def pump(tx: StreamSender, rx: StreamReceiver, *, wire: bool = False, max_steps: int = 100_000):
    """Run sender and receiver against each other; return the receiver's events.

    Also asserts after every DATA frame that the sender never went past the credit
    the receiver granted.
    """
    events = []
    for _ in range(max_steps):
        if tx.finished and rx.finished:
            break
        frame = tx.next_frame()
        if frame is not None:
            if wire:
                frame = via_wire(frame)
            ev = rx.receive(frame)
            assert rx.progress[0] <= max(rx.granted, 0) or rx.finished
            if ev is not None:
                events.append(ev)
        backs = rx.frames_to_send()
        for back in backs:
            tx.receive(via_wire(back) if wire else back)
        if frame is None and not backs:
            break
    return events


def payload(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8)


def split(data: np.ndarray, cuts: list[int]) -> list[memoryview]:
    """``data`` cut into segments at the given positions (sorted, deduplicated)."""
    edges = [0, *sorted(set(c for c in cuts if 0 < c < data.size)), data.size]
    return [memoryview(data[a:b]) for a, b in itertools.pairwise(edges)]
