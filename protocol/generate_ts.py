"""Renders the protocol's two derived files from the Python definitions: nightlab-protocol.ts (the VS Code
extension's copy of the method names and payload types) and METHODS.md (one section per custom method).

    python -m nightlab.protocol.generate_ts           # write both files
    python -m nightlab.protocol.generate_ts --check   # exit 1 with a diff when a file on disk differs

The loop's control endpoint (control.py: its messages, their framing, its examples) is rendered after the
LSP's: its payload interfaces and a map from each message's "type" to its interface in the TypeScript, its
own part in METHODS.md.

The output depends on nothing but types.py, methods.py, examples.py and control.py (no dates, no paths, no dict order
of the interpreter), so the check is exact. TypeScript types come from the annotations: str -> string,
int/float -> number, bool -> boolean, list[T] -> T[], dict[str, T] -> Record<string, T>, Literal ->
a union of its values (named when it is one of types.ALIASES), a payload class -> its name, and
`T | None` -> an optional field `name?: T | null`.

Must not import: nightlab.server, nightlab.trainer, pygls, lsprotocol.
"""

from __future__ import annotations

import difflib
import inspect
import json
import re
import sys
import types as _pytypes
import typing
from collections.abc import Iterable
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any, Literal, Union

from . import control as ctl
from . import examples as ex
from . import methods as m
from . import types as t
from .wire import camel, hints, is_optional

HERE = Path(__file__).resolve().parent
TS_FILE = HERE / "nightlab-protocol.ts"
MD_FILE = HERE / "METHODS.md"
HEADER = "generated from protocol/types.py, methods.py and control.py by generate_ts.py: do not edit"
_FIELD_COMMENT = re.compile(r"^    (\w+): [^#]*#\s*(.+?)\s*$")


# ---------------------------------------------------------------------------- types


def ts_type(tp: Any, aliases: dict[str, Any]) -> str:
    """The TypeScript type for a Python annotation (without the `| null` of an optional field)."""
    for name, alias in aliases.items():
        if tp == alias:
            return name
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, _pytypes.UnionType):
        return " | ".join("null" if a is type(None) else ts_type(a, aliases) for a in args)
    if origin is Literal:
        return " | ".join(json.dumps(a) for a in args)
    if origin is list:
        inner = ts_type(args[0], aliases)
        return f"({inner})[]" if " " in inner else f"{inner}[]"
    if origin is dict:
        return f"Record<string, {ts_type(args[1], aliases)}>"
    if isinstance(tp, type) and is_dataclass(tp):
        return tp.__name__
    simple = {str: "string", int: "number", float: "number", bool: "boolean", Any: "unknown"}
    if tp in simple:
        return simple[tp]
    raise TypeError(f"no TypeScript type for {tp!r}")


def _comment(text: str) -> str:
    return "/** " + text.replace("*/", "*\\/") + " */"


def _doc(cls: type) -> str:
    doc = inspect.cleandoc(cls.__dict__.get("__doc__") or "")
    return "" if doc.startswith(cls.__name__ + "(") else doc  # dataclass's generated signature: none


def _field_comments(cls: type) -> dict[str, str]:
    """The trailing `# comment` of each field in the class's source (none for a class built at runtime)."""
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    return {mt.group(1): mt.group(2) for mt in map(_FIELD_COMMENT.match, source.splitlines()) if mt}


def render_interface(cls: type, aliases: dict[str, Any]) -> str:
    lines = [_comment(_doc(cls))] if _doc(cls) else []
    lines.append(f"export interface {cls.__name__} {{")
    comments = _field_comments(cls)
    for f in fields(cls):
        tp = hints(cls)[f.name]
        if f.name in comments:
            lines.append("  " + _comment(comments[f.name]))
        if is_optional(tp):
            inner = [a for a in typing.get_args(tp) if a is not type(None)]
            lines.append(f"  {camel(f.name)}?: {ts_type(Union[tuple(inner)], aliases)} | null;")  # noqa: UP007 (built at run time)
        else:
            lines.append(f"  {camel(f.name)}: {ts_type(tp, aliases)};")
    lines.append("}")
    return "\n".join(lines)


def _name(cls: type | None) -> str:
    return cls.__name__ if cls is not None else "null"


def _check_closed(payloads: Iterable[type], registry: Iterable[m.Method]) -> None:
    """Every payload a method or a field names must be rendered, or the TypeScript would not compile."""
    names = {c.__name__ for c in payloads}
    wanted = [c for meth in registry for c in (meth.params, meth.result) if c is not None]
    for cls in payloads:
        for tp in hints(cls).values():
            stack = [tp]
            while stack:
                x = stack.pop()
                stack.extend(typing.get_args(x))
                if isinstance(x, type) and is_dataclass(x):
                    wanted.append(x)
    missing = sorted({c.__name__ for c in wanted} - names)
    if missing:
        raise ValueError(f"payload classes used but not in types.PAYLOADS: {', '.join(missing)}")


def render_ts(
    payloads: Iterable[type] = t.PAYLOADS,
    registry: Iterable[m.Method] = m.REGISTRY,
    aliases: dict[str, Any] | None = None,
) -> str:
    """nightlab-protocol.ts."""
    payloads, registry = list(payloads), list(registry)
    aliases = t.ALIASES if aliases is None else aliases
    _check_closed(payloads, registry)
    out = [
        f"// {HEADER}",
        "// Nightlab's LSP extensions: method names and payload types. See protocol/METHODS.md.",
        "",
        f"export const PROTOCOL_VERSION = {m.PROTOCOL_VERSION};",
        f"export const EXPERIMENTAL_CAPABILITY = {json.dumps(m.EXPERIMENTAL_CAPABILITY)};",
        "",
        "export const Methods = {",
    ]
    out += [f"  {x.key}: {json.dumps(x.name)}," for x in registry if x.kind != "command"]
    out += ["} as const;", "", "export const Commands = {"]
    out += [f"  {x.key}: {json.dumps(x.name)}," for x in registry if x.kind == "command"]
    out += ["} as const;", ""]
    out += [f"export type {name} = {ts_type(alias, {})};" for name, alias in aliases.items()]
    out.append("")
    for cls in payloads:
        out += [render_interface(cls, aliases), ""]
    out += ["/** The params of each server -> client notification. */", "export interface NotificationParams {"]
    out += [f"  {json.dumps(x.name)}: {_name(x.params)};" for x in registry if x.kind == "notification"]
    out += [
        "}",
        "",
        "/** The params and result of each client -> server request. */",
        "export interface RequestTypes {",
    ]
    out += [
        f"  {json.dumps(x.name)}: {{ params: {_name(x.params)}; result: {_name(x.result)} }};"
        for x in registry
        if x.kind == "request"
    ]
    out += [
        "}",
        "",
        "/** The arguments (of workspace/executeCommand) and result of each command. */",
        "export interface CommandTypes {",
    ]
    for x in registry:
        if x.kind == "command":
            args = "[]" if x.params is None else f"[{x.params.__name__}{'?' if x.params_optional else ''}]"
            out.append(f"  {json.dumps(x.name)}: {{ args: {args}; result: {_name(x.result)} }};")
    out += ["}", ""]
    return "\n".join(out + render_control_ts(aliases))


def render_control_ts(aliases: dict[str, Any]) -> list[str]:
    """The control endpoint's part of nightlab-protocol.ts: constants, its named literals, its messages."""
    both = {**aliases, **ctl.ALIASES}
    _check_closed([*t.PAYLOADS, *ctl.PAYLOADS], [])
    out = [
        "// The loop's control endpoint: line-delimited JSON over .nightlab/<tag>/loop.sock (METHODS.md, last part).",
        "",
        f"export const CONTROL_VERSION = {ctl.CONTROL_VERSION};",
        f"export const CONTROL_MAX_LINE = {ctl.MAX_LINE};",
        "",
    ]
    out += [f"export type {name} = {ts_type(alias, {})};" for name, alias in ctl.ALIASES.items()]
    out.append("")
    for cls in ctl.PAYLOADS:
        out += [render_interface(cls, both), ""]
    out += ["/** Each message on the control socket, by its `type`. */", "export interface ControlMessages {"]
    out += [f"  {json.dumps(kind)}: {cls.__name__};" for kind, cls in ctl.MESSAGES.items()]
    out += [
        "}",
        "",
        "/** One line on the control socket: its `type` and that message's fields. */",
        "export type ControlMessage = {",
        "  [K in keyof ControlMessages]: { type: K } & ControlMessages[K];",
        "}[keyof ControlMessages];",
        "",
    ]
    return out


# ---------------------------------------------------------------------------- METHODS.md


def _json(value: Any) -> str:
    return "```json\n" + json.dumps(value, indent=2, ensure_ascii=False) + "\n```"


def _wire(obj: Any) -> Any:
    return obj.to_wire() if obj is not None else None


def _section(meth: m.Method, aliases: dict[str, Any], example: tuple[Any, Any]) -> list[str]:
    kind = {"notification": "notification", "request": "request", "command": "command (`workspace/executeCommand`)"}[
        meth.kind
    ]
    label = "Command" if meth.kind == "command" else "Method"
    optional = " (optional)" if meth.params_optional else ""
    result = "none (a notification)" if meth.kind == "notification" else _name(meth.result)
    out = [
        f"## {meth.title}",
        "",
        f"**{label}:** `{meth.name}`  ",
        f"**Direction:** {meth.direction}, {kind}  ",
        f"**Params:** `{_name(meth.params)}`{optional}  " if meth.params else "**Params:** none  ",
        f"**Result:** `{result}`" if meth.result else f"**Result:** {result}",
        "",
        meth.doc,
        "",
    ]
    shown = [c for c in (meth.params, meth.result) if c is not None]
    if shown:
        out += ["```typescript", "\n\n".join(render_interface(c, aliases) for c in shown), "```", ""]
    params_ex, result_ex = example
    if meth.kind == "notification":
        out += ["Example:", "", _json({"jsonrpc": "2.0", "method": meth.name, "params": _wire(params_ex)}), ""]
    elif meth.kind == "request":
        out += ["Example params:", "", _json(_wire(params_ex)), "", "Example result:", "", _json(_wire(result_ex)), ""]
    else:
        args = [] if params_ex is None else [_wire(params_ex)]
        out += [
            "Example params of `workspace/executeCommand`:",
            "",
            _json({"command": meth.name, "arguments": args}),
            "",
            "Example result:",
            "",
            _json(_wire(result_ex)),
            "",
        ]
    return out


def render_md(
    payloads: Iterable[type] = t.PAYLOADS,
    registry: Iterable[m.Method] = m.REGISTRY,
    aliases: dict[str, Any] | None = None,
    examples: dict[str, tuple[Any, Any]] | None = None,
) -> str:
    """METHODS.md, in the manner of rust-analyzer's lsp-extensions.md."""
    payloads, registry = list(payloads), list(registry)
    aliases = t.ALIASES if aliases is None else aliases
    examples = ex.EXAMPLES if examples is None else examples
    out = [
        f"<!-- {HEADER} -->",
        "",
        "# Nightlab LSP extensions",
        "",
        m.PREAMBLE,
        f"Protocol version: {m.PROTOCOL_VERSION}.",
        "",
    ]
    groups = (("Notifications", "notification"), ("Requests", "request"), ("Commands", "command"))
    for heading, kind in groups:
        out += [f"**{heading}:** " + ", ".join(f"`{x.name}`" for x in registry if x.kind == kind) + "  "]
    out.append("")
    for meth in registry:
        if meth.name not in examples:
            raise ValueError(f"examples.EXAMPLES has no example for {meth.name}")
        out += _section(meth, aliases, examples[meth.name])
    direct = {c for x in registry for c in (x.params, x.result) if c is not None}
    shared = [c for c in payloads if c not in direct]
    out += ["## Shared types", "", "```typescript"]
    out.append("\n".join(f"export type {name} = {ts_type(alias, {})};" for name, alias in aliases.items()))
    out += ["", "\n\n".join(render_interface(x, aliases) for x in shared), "```", ""]
    return "\n".join(out + render_control_md(aliases))


def render_control_md(aliases: dict[str, Any]) -> list[str]:
    """METHODS.md's last part: the loop's control endpoint, a section per message with an example line."""
    both = {**aliases, **ctl.ALIASES}
    out = ["# The loop's control endpoint", "", ctl.DOC, f"Control protocol version: {ctl.CONTROL_VERSION}.  "]
    out += ["**Messages:** " + ", ".join(f"`{kind}`" for kind in ctl.MESSAGES), ""]
    for kind, cls in ctl.MESSAGES.items():
        sender = ctl.SENT_BY[kind]
        out += [
            f"## `{kind}`",
            "",
            f"**Type:** `{kind}`  ",
            f"**Direction:** {sender} -> {'client' if sender == 'loop' else 'loop'}  ",
            f"**Payload:** `{cls.__name__}`",
            "",
            "```typescript",
            render_interface(cls, both),
            "```",
            "",
            "Example line:",
            "",
            "```json",
            ctl.encode(ctl.EXAMPLES[kind]).decode().rstrip("\n"),
            "```",
            "",
        ]
    shared = [x for x in ctl.PAYLOADS if x not in ctl.MESSAGES.values()]
    out += ["## Control types", "", "```typescript"]
    out.append("\n".join(f"export type {name} = {ts_type(alias, {})};" for name, alias in ctl.ALIASES.items()))
    out += ["", "\n\n".join(render_interface(x, both) for x in shared), "```", ""]
    return out


# ---------------------------------------------------------------------------- files


def outputs() -> dict[Path, str]:
    return {TS_FILE: render_ts(), MD_FILE: render_md()}


def diff(path: Path, expected: str) -> str:
    """A unified diff from the file on disk to what the generator renders; "" when they are equal."""
    actual = path.read_text(encoding="utf-8") if path.exists() else ""
    if actual == expected:
        return ""
    return "".join(
        difflib.unified_diff(
            actual.splitlines(True), expected.splitlines(True), f"{path.name} (on disk)", f"{path.name} (generated)"
        )
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    check = "--check" in argv
    stale = 0
    for path, text in outputs().items():
        delta = diff(path, text)
        if not delta:
            continue
        stale += 1
        if check:
            sys.stdout.write(delta)
        else:
            path.write_text(text, encoding="utf-8", newline="\n")
            print(f"wrote {path}")
    if check and stale:
        print(f"\n{stale} generated file(s) out of date: run python -m nightlab.protocol.generate_ts", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
