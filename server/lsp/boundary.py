"""The language server's typed boundary: params decoded with the protocol's checked decoding (`decode`),
answers sent as its payloads, and a Session's errors answered as the LSP errors METHODS.md names.

- A bad argument or an unknown experiment number answers InvalidParams (-32602); what the workspace's
  state does not allow now (start while the loop runs, resume while it does not, a hunk that no longer
  fits) answers RequestFailed (-32803). Both carry a message in plain words, no Python class name, no
  traceback, and neither is logged as an error: they are answers for the client to show, not faults.
- Anything else is a fault of the server: pygls answers InternalError (-32603) and logs its traceback.

pygls 2.1 answers a `JsonRpcException` raised by a handler with its code and message (anything else as
InternalError with a traceback in `data`), and logs every one of them with `logger.exception`; the
filter `quiet_expected_errors` installs keeps that traceback off stderr for the two expected kinds.
"""

from __future__ import annotations

import functools
import inspect
import logging
import re
from collections.abc import Callable
from dataclasses import fields
from typing import Any, TypeVar, cast

from lsprotocol.types import LSPErrorCodes
from pygls.exceptions import JsonRpcException, JsonRpcInvalidParams

from nightlab.protocol.types import Wire, WireError, camel
from nightlab.server.editor.session import SessionError

log = logging.getLogger(__name__)
T = TypeVar("T")


class InvalidParams(JsonRpcInvalidParams):
    """A bad argument, or an experiment number the ledger does not have."""


class RequestFailed(JsonRpcException):
    """The request is well formed, but the workspace's state does not allow it now."""

    CODE = int(LSPErrorCodes.RequestFailed)
    MESSAGE = "Request Failed"


EXPECTED = (InvalidParams, RequestFailed)


class _QuietExpected(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], EXPECTED))


def quiet_expected_errors() -> None:
    """No ERROR traceback on stderr for InvalidParams and RequestFailed (pygls logs each error it answers)."""
    for name in ("pygls.protocol.json_rpc", "pygls.protocol.language_server"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _QuietExpected) for f in logger.filters):
            logger.addFilter(_QuietExpected())


def lsp_error(exc: SessionError) -> JsonRpcException:
    return InvalidParams(str(exc)) if exc.kind == SessionError.INVALID else RequestFailed(str(exc))


# ---------------------------------------------------------------------------- params

_TYPE_WORDS = {"int": "a whole number", "float": "a number", "str": "a string", "bool": "true or false"}


def _plain_message(exc: WireError) -> str:
    """The decoder's message for a person: the key, what it must be, what came ("budgetSeconds must be a
    number, got 'abc'"); the payload class's name left out."""
    text = re.sub(r"^[A-Z]\w*(\.|: )", "", str(exc))
    return re.sub(
        r": expected (\w+), got \w+ (.*)$", lambda m: f" must be {_TYPE_WORDS.get(m[1], m[1])}, got {m[2]}", text
    )


def plain(value: Any) -> Any:
    """pygls gives a custom request's params as namedtuples (nested ones too): back to JSON's dicts."""
    if hasattr(value, "_asdict"):
        return {k: plain(v) for k, v in value._asdict().items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def decode(cls: type[T], params: Any, *, strict: bool = False) -> T:
    """`params` (a request's params or a command's argument) as the payload class `cls`; InvalidParams
    when it does not fit. `strict`: a key `cls` does not know is an error too (a misspelt option)."""
    data = plain(params)
    data = {} if data is None else data
    if strict and isinstance(data, dict):
        known = {camel(f.name) for f in fields(cast(Any, cls))}  # cls: a Wire dataclass
        unknown = sorted(set(data) - known)
        if unknown:
            raise InvalidParams(f"unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    try:
        return cls.from_wire(data)  # type: ignore[attr-defined]
    except WireError as exc:
        raise InvalidParams(_plain_message(exc)) from None


def argument(args: tuple) -> Any:
    """A command's one argument: an object, or a bare number for the commands that take an experiment."""
    if not args or args[0] is None:
        return {}
    first = args[0]
    return {"number": first} if isinstance(first, int) and not isinstance(first, bool) else first


# ---------------------------------------------------------------------------- handlers


def _answer(result: Any) -> Any:
    return result.to_wire() if isinstance(result, Wire) else result


def handler(fn: Callable) -> Callable:
    """A request or command handler at the boundary: a payload answer goes out in its wire form, a
    SessionError as InvalidParams or RequestFailed by its kind. The signature stays the handler's
    (pygls reads it to pass the server and the arguments)."""
    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def run_async(*args: Any) -> Any:
            try:
                return _answer(await fn(*args))
            except SessionError as exc:
                log.info("%s: %s", fn.__name__, exc)
                raise lsp_error(exc) from None

        return run_async

    @functools.wraps(fn)
    def run(*args: Any) -> Any:
        try:
            return _answer(fn(*args))
        except SessionError as exc:
            log.info("%s: %s", fn.__name__, exc)
            raise lsp_error(exc) from None

    return run
