"""A one-line progress bar for long transfers (bytes done / total), fed by ``stream_progress``.

On a terminal the line is redrawn in place at most every ``interval`` seconds;
elsewhere (logs, pipes) only the summary line is written when the transfer
ends, so captured output stays readable.  Transfers below ``min_bytes`` draw
nothing.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from typing import TextIO

__all__ = ["TransferBar", "showing_transfers"]

MiB = 1 << 20


class TransferBar:
    """``bar(done, total)`` draws the bar; ``bar.close()`` ends the line (see module docstring)."""

    def __init__(self, label: str, stream: TextIO | None = None, *, width: int = 30,
                 interval: float = 0.1, min_bytes: int = 4 * MiB,
                 tty: bool | None = None) -> None:
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self.interval = interval
        self.min_bytes = min_bytes
        self.tty = self.stream.isatty() if tty is None else tty
        self.done = 0
        self.total = 0
        self._start: float | None = None
        self._drawn = 0.0
        self._open = False  # a partial line is on the terminal

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if self._start is None or done < self.done:  # a new transfer
            self._start, self._drawn = now, 0.0
        self.done, self.total = done, total
        if total < self.min_bytes:
            return
        if done >= total:
            self._finish(now)
        elif self.tty and now - self._drawn >= self.interval:
            self._drawn = now
            self.stream.write("\r" + self.line(now))
            self.stream.flush()
            self._open = True

    def line(self, now: float | None = None) -> str:
        """The bar as text: label, bar, MiB done of total, rate."""
        now = time.monotonic() if now is None else now
        frac = self.done / self.total if self.total else 1.0
        filled = int(frac * self.width)
        rate = self.done / max(now - (self._start or now), 1e-9) / 1e6
        return (f"{self.label} [{'#' * filled}{'.' * (self.width - filled)}] "
                f"{self.done / MiB:.1f}/{self.total / MiB:.1f} MiB {rate:.0f} MB/s")

    def _finish(self, now: float) -> None:
        seconds = now - (self._start or now)
        text = (f"{self.label}: {self.total / MiB:.1f} MiB in {seconds:.1f} s "
                f"({self.total / max(seconds, 1e-9) / 1e6:.0f} MB/s)")
        self.stream.write(("\r" + self.line(now) + "\n" if self.tty else "") + text + "\n")
        self.stream.flush()
        self._open = False

    def close(self) -> None:
        """End a partial line (a transfer that stopped before its end)."""
        if self._open:
            self.stream.write("\n")
            self.stream.flush()
            self._open = False


@contextlib.contextmanager
def showing_transfers(label: str, stream: TextIO | None = None) -> Iterator[TransferBar]:
    """A :class:`TransferBar` fed by the streams sent inside the block, its line ended after."""
    from cellnet._streaming import stream_progress

    bar = TransferBar(label, stream)
    try:
        with stream_progress(bar):
            yield bar
    finally:
        bar.close()
