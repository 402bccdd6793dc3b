"""Host.stream and Host.interactive over a real sshd: what `inv logs --follow` and `inv exec`
stand on. Lines arrive while the command still runs, nothing is kept but the tail, Ctrl-C on a
pty hangs the remote command up, and a command attached to a terminal passes its exit status on."""
from __future__ import annotations

import io
import os
import signal
import subprocess
import threading
import time
import uuid

import pytest

from remote.host import STREAM_TAIL_LINES, LineSplitter


def test_lines_arrive_while_the_command_still_runs(host):
    seen: list[tuple[float, str]] = []
    t0 = time.monotonic()
    res = host.stream("echo first; sleep 1.5; echo second >&2; printf 'no newline'",
                      lambda line: seen.append((time.monotonic() - t0, line)))
    assert [line for _, line in seen] == ["first", "second", "no newline"]   # stderr too, in order
    assert seen[0][0] < 1.2 < seen[1][0]                                     # the first before the sleep ended
    assert res.exited == 0


def test_a_line_on_stderr_never_lands_inside_an_unfinished_stdout_line(host):
    """stdout and stderr are two streams: a partial stdout line is finished by stdout's own next
    bytes, not by whatever stderr printed meanwhile (CI: 'no newlinesecond')."""
    seen: list[str] = []
    host.stream("printf 'partial'; sleep 0.3; echo err >&2; sleep 0.3; echo ' end'", seen.append)
    assert seen == ["err", "partial end"]


def test_only_the_tail_is_kept_and_the_exit_status_is_returned(host):
    count = 0

    def on_line(line: str) -> None:
        nonlocal count
        count += 1
    res = host.stream("seq 1 5000; exit 3", on_line)
    assert count == 5000 and res.exited == 3
    assert res.stdout.splitlines() == [str(n) for n in range(5001 - STREAM_TAIL_LINES, 5001)]
    assert res.tail() == "5000"


def test_ctrl_c_on_a_pty_hangs_the_remote_command_up(host):
    """KeyboardInterrupt (here raised by the line handler, as Ctrl-C would be between reads)
    closes the session: with a pty the remote command gets SIGHUP at once instead of living on
    until its next write."""
    marker = str(1000 + uuid.uuid4().int % 8000)

    def interrupt(line: str) -> None:
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        host.stream(f"echo ready; exec sleep {marker}", interrupt, pty=True)
    deadline = time.monotonic() + 5
    while subprocess.run(["pgrep", "-f", f"sleep {marker}"], capture_output=True).returncode == 0:
        assert time.monotonic() < deadline, "the remote command outlived the session"
        time.sleep(0.1)
    assert host.run("echo still usable").stdout.strip() == "still usable"


def test_a_pty_stream_has_no_carriage_returns(host):
    seen: list[str] = []
    host.stream("echo one; echo two", seen.append, pty=True)
    assert seen == ["one", "two"]


def test_an_attached_command_gets_our_stdin_and_passes_its_exit_status_on(host):
    out, err = io.StringIO(), io.StringIO()
    status = host.interactive("cat; echo oops >&2; exit 7", pty=False, stdin=io.StringIO("hello\n"),
                              stdout=out, stderr=err)
    assert status == 7 and out.getvalue() == "hello\n" and err.getvalue() == "oops\n"


def test_with_a_pty_the_remote_command_has_a_terminal(host):
    out = io.StringIO()
    status = host.interactive("tty", pty=True, stdin=io.StringIO(""), stdout=out, stderr=io.StringIO())
    assert status == 0 and out.getvalue().strip().startswith("/dev/pts/")


def test_utf8_split_across_reads_is_one_character():
    seen: list[str] = []
    lines = LineSplitter(seen.append, keep=2)
    data = "café\r\nzwei\ndrei".encode()
    for i in range(len(data)):          # one byte at a time: é is split between two reads
        lines.feed(data[i:i + 1])
    lines.close()
    assert seen == ["café", "zwei", "drei"] and list(lines.tail) == ["zwei", "drei"]


def test_a_real_ctrl_c_ends_the_stream_at_once_and_hangs_the_remote_command_up(host, request):
    """SIGINT, as a terminal's Ctrl-C sends it, while the stream waits: KeyboardInterrupt comes
    out of stream (raised by it, after the channel is closed, never inside paramiko), and the
    pty's hang-up ends the remote command."""
    marker = f"sigint-{uuid.uuid4().hex[:8]}"
    # as in a terminal: SIGINT raises (this test process may have inherited it ignored, as a
    # job a script put in the background does)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    request.addfinalizer(lambda: signal.signal(signal.SIGINT, previous))
    timer = threading.Timer(0.8, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        host.stream(f"exec -a {marker} sleep 60", lambda line: None, pty=True)
    assert time.monotonic() - t0 < 5
    deadline = time.monotonic() + 10
    while host.run(f"pgrep -f {marker}", check=False).ok:
        assert time.monotonic() < deadline, "the remote command outlived the Ctrl-C"
        time.sleep(0.2)
