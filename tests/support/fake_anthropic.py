"""A fake Claude API: a real HTTP server on 127.0.0.1 that answers POST /v1/messages from a script.

The real `anthropic` SDK talks to it over a socket, so its retries, timeouts and parsing run for real.
Each request takes the next behaviour off the script (a tool call, a text answer, an HTTP error, a slow
answer, a dropped connection, a raw body such as a proxy's HTML page); every request is recorded (path,
headers, parsed body, raw body) so a test can check the prompt, cache_control, tool_choice and where the
key went. An exhausted script answers 400 "script exhausted", which the agent does not retry, so a test
with too short a script fails fast instead of hanging.

Use the `fake_anthropic` fixture: `fake.script(tool_call({...}), http_error(429)); fake.base_url`.
"""

from __future__ import annotations

import itertools
import json
import socket
import threading
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

DEFAULT_USAGE = {
    "input_tokens": 120,
    "output_tokens": 80,
    "cache_creation_input_tokens": 0,
    "cache_read_input_tokens": 0,
}
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


@dataclass
class Behaviour:
    kind: str  # message | error | slow | disconnect | raw
    content: list[dict[str, Any]] = field(default_factory=list)
    stop_reason: str = "end_turn"
    usage: dict[str, int] = field(default_factory=dict)
    status: int = 200
    message: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0


def tool_call(
    input: Any, *, name: str = "propose_experiment", usage: dict[str, int] | None = None, text: str = ""
) -> Behaviour:
    """An answer that calls `name` with `input` (valid or not: the fake does not check it)."""
    content = [{"type": "text", "text": text}] if text else []
    content.append({"type": "tool_use", "id": "", "name": name, "input": input})
    return Behaviour("message", content=content, stop_reason="tool_use", usage=dict(usage or {}))


def text_reply(
    text: str = "I think we should raise the learning rate.",
    *,
    usage: dict[str, int] | None = None,
    stop_reason: str = "end_turn",
) -> Behaviour:
    """An answer with no tool call (malformed for the agent)."""
    return Behaviour(
        "message", content=[{"type": "text", "text": text}], stop_reason=stop_reason, usage=dict(usage or {})
    )


def http_error(
    status: int,
    message: str = "",
    *,
    retry_after: str = "0",
    retry_after_ms: str | None = "1",
    headers: dict[str, str] | None = None,
) -> Behaviour:
    """An error answer in the API's shape. `retry-after-ms: 1` keeps the SDK's own retry wait short."""
    h = {"retry-after": retry_after, **(headers or {})}
    if retry_after_ms is not None:
        h["retry-after-ms"] = retry_after_ms
    return Behaviour("error", status=status, message=message or f"fake {status}", headers=h)


PROXY_PAGE = "<!DOCTYPE html><html><head><title>Proxy login</title></head><body>Sign in to continue</body></html>"


def raw(body: str, *, status: int = 200, content_type: str = "text/html; charset=utf-8") -> Behaviour:
    """An answer that is not the API's: `body` as it is, under `content_type` (a proxy's HTML page, an
    empty body, JSON of another shape)."""
    return Behaviour("raw", status=status, message=body, headers={"content-type": content_type})


def html_page(status: int = 200) -> Behaviour:
    """A proxy's or captive portal's HTML page where the Messages API should be."""
    return raw(PROXY_PAGE, status=status)


def rate_limited() -> Behaviour:
    return http_error(429, "Number of request tokens has exceeded your per-minute rate limit")


def server_error() -> Behaviour:
    return http_error(500, "Internal server error")


def overloaded() -> Behaviour:
    return http_error(529, "Overloaded")


def slow(seconds: float, then: Behaviour | None = None) -> Behaviour:
    """Wait `seconds` before answering (with `then`, or a valid-looking text answer): longer than the
    client's timeout, the client gives up first."""
    b = then or text_reply("late")
    return Behaviour(
        b.kind,
        content=b.content,
        stop_reason=b.stop_reason,
        usage=b.usage,
        status=b.status,
        message=b.message,
        headers=b.headers,
        seconds=seconds,
    )


def disconnect() -> Behaviour:
    """Read the request, then close the socket without an answer."""
    return Behaviour("disconnect")


class FakeAnthropic:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self._script: deque[Behaviour] = deque()
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._closing = threading.Event()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # keep pytest output clean
                pass

            def do_POST(self) -> None:
                fake._handle(self)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, name="fake-anthropic", daemon=True
        )  # a short poll: a quick shutdown

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeAnthropic:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._closing.set()  # wakes slow answers
        self._server.shutdown()
        self._server.server_close()

    def script(self, *behaviours: Behaviour) -> None:
        with self._lock:
            self._script.extend(behaviours)

    @property
    def left(self) -> int:
        return len(self._script)

    # ---- one request

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        length = int(h.headers.get("content-length") or 0)
        raw = h.rfile.read(length).decode("utf-8") if length else ""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        with self._lock:
            headers = {k.lower(): v for k, v in h.headers.items()}
            self.requests.append({"method": "POST", "path": h.path, "headers": headers, "body": body, "raw": raw})
            b = self._script.popleft() if self._script else http_error(400, "fake_anthropic: script exhausted")
        if h.path.split("?")[0] != "/v1/messages":
            b = http_error(404, f"fake_anthropic: no route {h.path}")
        if b.seconds and self._closing.wait(b.seconds):
            return
        if b.kind == "disconnect":
            h.close_connection = True
            try:
                h.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        if b.kind == "raw":
            self._send(h, b.status, b.message, b.headers)
            return
        if b.kind == "error":
            error = {"type": _ERROR_TYPES.get(b.status, "api_error"), "message": b.message}
            payload = {"type": "error", "error": error, "request_id": f"req_fake_{next(self._ids)}"}
            self._send(h, b.status, payload, b.headers)
            return
        n = next(self._ids)
        content = [
            dict(c, id=c["id"] or f"toolu_fake_{n}_{i}") if c["type"] == "tool_use" else c
            for i, c in enumerate(b.content)
        ]
        payload = {
            "id": f"msg_fake_{n}",
            "type": "message",
            "role": "assistant",
            "model": (body or {}).get("model", "claude-fake"),
            "content": content,
            "stop_reason": b.stop_reason,
            "stop_sequence": None,
            "usage": {**DEFAULT_USAGE, **b.usage},
        }
        self._send(h, 200, payload, {"request-id": f"req_fake_{n}"})

    @staticmethod
    def _send(h: BaseHTTPRequestHandler, status: int, payload: dict[str, Any] | str, headers: dict[str, str]) -> None:
        data = (payload if isinstance(payload, str) else json.dumps(payload)).encode("utf-8")
        headers = {"content-type": "application/json", **headers}
        try:
            h.send_response(status)
            h.send_header("content-length", str(len(data)))
            for k, v in headers.items():
                h.send_header(k, v)
            h.end_headers()
            h.wfile.write(data)
        except OSError:  # the client gave up (a timeout): nobody to answer
            h.close_connection = True


@pytest.fixture
def fake_anthropic():
    fake = FakeAnthropic().start()
    try:
        yield fake
    finally:
        fake.stop()


def only_this_key(monkeypatch, key: str) -> None:
    """The environment a test's loop sees: `key` as ANTHROPIC_API_KEY (recognisable anywhere it might
    leak), none of the SDK's other credentials or profiles, and no proxy for the fake on 127.0.0.1."""
    for name in ("ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_CUSTOM_HEADERS", "ANTHROPIC_PROFILE", "ANTHROPIC_CONFIG_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ANTHROPIC_API_KEY", key)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
