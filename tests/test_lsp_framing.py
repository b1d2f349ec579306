"""The real language server over stdio keeps serving after input that breaks LSP's framing: binary
noise, a malformed or missing Content-Length, an oversized message (1 TB announced: refused before any
of it is read), a body that is not JSON. Each case is sent before a valid `initialize`, which must
still be answered; the server stays up and its stderr names what it skipped, with no traceback."""

from __future__ import annotations

import json
import select
import subprocess
import sys
import time

import pytest


def frame(obj) -> bytes:
    body = json.dumps(obj).encode()
    return b"Content-Length: %d\r\n\r\n" % len(body) + body


INITIALIZE = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"capabilities": {}, "processId": None}}

CASES = {
    "binary noise": b"\x00\xff\xfe garbage \x01\r\n\r\n",
    "a malformed length": b"Content-Length: abc\r\n\r\n{}",
    "no length at all": b"Content-Type: application/vscode-jsonrpc\r\n\r\n{}",
    "an oversized message": b"Content-Length: 1000000000000\r\n\r\n{}",
    "a body that is not JSON": b"Content-Length: 9\r\n\r\nnot json!",
    "a very long line": b"x" * 300_000 + b"\r\n",
}


def answer(proc: subprocess.Popen, timeout: float = 20) -> dict:
    """The first message the server writes (its header, then exactly the announced body)."""
    end, buf = time.monotonic() + timeout, b""
    while time.monotonic() < end:
        ready, _, _ = select.select([proc.stdout], [], [], 0.2)
        if ready:
            chunk = proc.stdout.read1(65536)
            if not chunk:
                break
            buf += chunk
            head, sep, rest = buf.partition(b"\r\n\r\n")
            if sep:
                length = int(next(h for h in head.split(b"\r\n") if h.startswith(b"Content-Length")).split(b":")[1])
                if len(rest) >= length:
                    return json.loads(rest[:length])
    raise AssertionError(f"no answer within {timeout} s; got {buf[:200]!r}")


@pytest.mark.parametrize("bad", CASES.values(), ids=CASES.keys())
def test_the_server_reads_on_after_bad_input(bad):
    proc = subprocess.Popen(
        [sys.executable, "-m", "nightlab.server"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        proc.stdin.write(bad + frame(INITIALIZE))
        proc.stdin.flush()
        reply = answer(proc)
        assert reply["id"] == 1 and "capabilities" in reply["result"], reply
        assert proc.poll() is None, "the server died"
    finally:
        proc.kill()
        _, err = proc.communicate(timeout=10)
    text = err.decode(errors="replace")
    assert "Traceback" not in text and "MemoryError" not in text, text
    assert "skipped" in text or "refused" in text, text  # it says what it dropped
