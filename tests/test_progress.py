"""TransferBar: in-place redraws on a terminal, one summary line elsewhere, nothing for small."""

from __future__ import annotations

import io

import pytest

from cellnet._progress import MiB, TransferBar, showing_transfers
from cellnet._streaming import _PROGRESS as _stream_progress_var


def test_terminal_bar_redraws_in_place_then_ends_with_a_summary():
    out = io.StringIO()
    bar = TransferBar("sending", out, tty=True, interval=0.0, width=10)
    bar(0, 8 * MiB)
    bar(4 * MiB, 8 * MiB)
    text = out.getvalue()
    assert text.count("\r") == 2 and "\n" not in text
    assert "[#####.....] 4.0/8.0 MiB" in text
    bar(8 * MiB, 8 * MiB)
    last = out.getvalue().splitlines()[-1]
    assert last.startswith("sending: 8.0 MiB in ") and last.endswith("MB/s)")
    bar.close()  # nothing open: no extra newline
    assert out.getvalue().endswith("MB/s)\n")


def test_log_output_gets_only_the_summary_line():
    out = io.StringIO()
    bar = TransferBar("uploading", out, tty=False, interval=0.0)
    for done in range(0, 9 * MiB, MiB):
        bar(done, 8 * MiB if done <= 8 * MiB else done)
    lines = out.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith("uploading: 8.0 MiB in ")


def test_small_transfers_draw_nothing_and_a_stopped_one_ends_its_line():
    out = io.StringIO()
    bar = TransferBar("x", out, tty=True, interval=0.0, min_bytes=MiB)
    bar(10, 100)
    bar(100, 100)
    assert out.getvalue() == ""
    bar(MiB, 4 * MiB)  # a new, bigger transfer that then breaks off
    bar.close()
    assert out.getvalue().startswith("\rx [") and out.getvalue().endswith("\n")


def test_showing_transfers_feeds_the_bar_inside_and_ends_its_line_even_on_error():
    out = io.StringIO()
    with pytest.raises(RuntimeError), showing_transfers("up", out) as bar:
        bar.tty, bar.interval = True, 0.0
        _stream_progress_var.get()(MiB, 8 * MiB)  # what a stream send reports
        raise RuntimeError("the transfer broke off")
    assert out.getvalue().startswith("\rup [") and out.getvalue().endswith("\n")
    assert _stream_progress_var.get() is None  # no longer fed after the block
