"""What the Claude agent checks: its options ([agent] / [agent.anthropic], typed, with errors that name
the key), that an answer is a Messages API response at all (not a proxy's HTML page), and the input of
a `propose_experiment` tool call (schema, editable paths, and that the edits apply to the files).
anthropic_agent.py uses these; a bad tool input goes back to the model.

Must not import: git, torch, the store, runner, ledger or engine. Never writes to disk.
"""

from __future__ import annotations

from typing import Any

import anthropic

from nightlab.server.agents.base import AgentError
from nightlab.server.agents.prompt import TOOL_SCHEMA
from nightlab.server.changes.edits import EditError, apply_edits, parse_search_replace
from nightlab.server.core.types import ExperimentContext, FileEdit

DEFAULTS: dict[str, Any] = {
    "model": "claude-sonnet-5-5",
    "max_tokens": 16000,  # thinking plus the answer: a thinking model cut off here has no tool call
    "temperature": None,  # not sent unless set; see check_temperature
    "base_url": None,  # None: the SDK's own ANTHROPIC_BASE_URL handling, then its default
    "timeout_s": 600.0,  # per request: a long thinking answer takes minutes (the SDK's own default)
    "max_retries": 6,  # the SDK's own retries per request
    "history_last_k": 20,
    "max_wait_s": 3600.0,  # give up after this long of continuous failure
    "retry_base_s": 2.0,
    "retry_cap_s": 300.0,
    "force_tool": None,  # None: force the tool unless the model is known to refuse forced tool use
    "effort": None,  # low | medium | high | xhigh | max -> output_config.effort; None: the model's default
    "prices": None,  # {input, output, cache_write, cache_read} in USD per million tokens
}
PRICE_KEYS = ("input", "output", "cache_write", "cache_read")
_KNOWN = set(DEFAULTS) | {"api_key"} | {f"price_{k}" for k in PRICE_KEYS}


class InvalidToolInput(Exception):
    """A tool call that cannot become a proposal; the message goes back to the model."""


# --------------------------------------------------------------------------------------------------
# options


def parse_options(options: dict[str, Any]) -> dict[str, Any]:
    """Flat [agent] keys, overridden by the [agent.anthropic] table; checked and typed."""
    nested = options.get("anthropic") or {}
    if not isinstance(nested, dict):
        raise AgentError("[agent.anthropic] must be a table")
    unknown = sorted(set(nested) - _KNOWN)
    if unknown:
        raise AgentError(
            f"[agent.anthropic]: unknown option(s) {', '.join(unknown)}; "
            f"known: {', '.join(sorted(_KNOWN - {'api_key'}))}"
        )
    merged = {**DEFAULTS, **{k: v for k, v in options.items() if k in _KNOWN}, **nested}

    def number(key: str, kind: type, low: float) -> Any:
        v = merged[key]
        if (
            isinstance(v, bool)
            or not isinstance(v, (int, float))
            or (kind is int and not isinstance(v, int))
            or v < low
        ):
            raise AgentError(
                f"[agent.anthropic] {key} must be {'an integer' if kind is int else 'a number'} >= {low:g}, not {v!r}"
            )
        return kind(v)

    out = dict(merged)
    if not isinstance(out["model"], str) or not out["model"].strip():
        raise AgentError(f"[agent.anthropic] model must be a model id such as {DEFAULTS['model']!r}")
    out["max_tokens"] = number("max_tokens", int, 1)
    out["max_retries"] = number("max_retries", int, 0)
    out["history_last_k"] = number("history_last_k", int, 0)
    for key in ("timeout_s", "max_wait_s", "retry_base_s", "retry_cap_s"):
        out[key] = number(key, float, 0)
    if out["base_url"] is not None and not isinstance(out["base_url"], str):
        raise AgentError("[agent.anthropic] base_url must be a URL string")
    if out["effort"] is not None and not isinstance(out["effort"], str):
        raise AgentError("[agent.anthropic] effort must be one of low, medium, high, xhigh, max")
    if out["force_tool"] is not None and not isinstance(out["force_tool"], bool):
        raise AgentError("[agent.anthropic] force_tool must be true or false")
    if not isinstance(merged["prices"] or {}, dict):
        raise AgentError("[agent.anthropic] prices must be a table such as {input = 3.0, output = 15.0}")
    prices = dict(merged["prices"] or {})
    prices.update({k[len("price_") :]: merged[k] for k in merged if k.startswith("price_")})
    for k, v in prices.items():
        if k not in PRICE_KEYS or isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
            raise AgentError(
                f"[agent.anthropic] prices: {k} = {v!r}; expected {', '.join(PRICE_KEYS)} as USD per million tokens"
            )
    out["prices"] = prices or None
    return out


def check_temperature(value: Any) -> float | None:
    if value is None:
        return None
    if int(anthropic.__version__.split(".")[0]) >= 2:
        # API version 2026-10-21, which SDK 2.x sends, removed temperature, top_p and top_k: a 400 every time.
        raise AgentError(
            "[agent.anthropic] temperature is not accepted by the Claude API version this SDK "
            f"(anthropic {anthropic.__version__}) speaks; remove it"
        )
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise AgentError(f"[agent.anthropic] temperature must be a number in [0, 1], not {value!r}")
    return float(value)


# --------------------------------------------------------------------------------------------------
# the answer


def _gist(text: str) -> str:
    return " ".join(text.split())[:80]


def not_a_message(response: Any) -> str:
    """What the SDK returned instead of a Messages response, in words; "" when it is one. The SDK hands
    back a body that is not JSON as a string, and JSON of another shape as a half-built object."""
    if isinstance(response, str):
        if not response.strip():
            return "an empty body"
        page = "an HTML page" if "<html" in response[:2000].lower() else "not JSON"
        return f"{page}, beginning {_gist(response)!r}"
    content = getattr(response, "content", None)
    usage = getattr(response, "usage", None)
    if (
        getattr(response, "type", None) != "message"
        or not isinstance(content, list)
        or usage is None
        or not all(isinstance(getattr(b, "type", None), str) and hasattr(b, "to_dict") for b in content)
    ):
        return "JSON that is not a Messages response"
    return ""


def unreadable(exc: Exception) -> str:
    """A body the SDK could not read (JSON that does not parse, such as an empty one), in words."""
    body = getattr(exc, "doc", None)
    if isinstance(body, str):
        return "an empty body" if not body.strip() else f"not JSON, beginning {_gist(body)!r}"
    return f"an unreadable body ({type(exc).__name__})"


# --------------------------------------------------------------------------------------------------
# the tool call


def _norm_path(path: str) -> str:
    return path.strip().replace("\\", "/").removeprefix("./")


def validate_tool_input(data: Any, ctx: ExperimentContext) -> tuple[str, str, list[FileEdit]]:
    """(description, hypothesis, edits) from a propose_experiment input, or `InvalidToolInput` saying what is wrong."""
    if not isinstance(data, dict):
        raise InvalidToolInput(
            f"the input must be an object with description, hypothesis and edits, not {type(data).__name__}"
        )
    missing = [k for k in TOOL_SCHEMA["required"] if k not in data]
    if missing:
        raise InvalidToolInput(f"missing required key(s): {', '.join(missing)}")
    for key in ("description", "hypothesis"):
        if not isinstance(data[key], str):
            raise InvalidToolInput(f"{key} must be a string, not {type(data[key]).__name__}")
    description = " ".join(data["description"].split())[:200]
    if not description:
        raise InvalidToolInput("description is empty; say in one line what the experiment changes")
    raw = data["edits"]
    if isinstance(raw, str):  # aider-style SEARCH/REPLACE blocks in one string
        try:
            edits = parse_search_replace(raw)
        except EditError as exc:
            raise InvalidToolInput(f"edits: {exc}") from None
    elif isinstance(raw, list):
        edits = []
        for i, e in enumerate(raw, start=1):
            if not isinstance(e, dict):
                raise InvalidToolInput(f"edit {i} must be an object with path, search and replace")
            for key in ("path", "search", "replace"):
                if not isinstance(e.get(key), str):
                    raise InvalidToolInput(
                        f"edit {i}: {key} must be a string" + ("" if key in e else f" (missing {key})")
                    )
            edits.append(FileEdit(path=_norm_path(e["path"]), search=e["search"], replace=e["replace"]))
    else:
        raise InvalidToolInput(f"edits must be a list of {{path, search, replace}}, not {type(raw).__name__}")
    if not edits:
        raise InvalidToolInput("edits is empty; give at least one SEARCH/REPLACE edit")
    editable = {_norm_path(p) for p in ctx.editable}
    for i, e in enumerate(edits, start=1):
        if e.path not in editable:
            raise InvalidToolInput(f"edit {i}: {e.path!r} is not editable (editable: {', '.join(sorted(editable))})")
    try:  # the same check the engine makes, so a bad SEARCH is fixed now rather than costing an experiment
        changed = apply_edits(ctx.files, edits, ctx.editable, [])
    except EditError as exc:
        raise InvalidToolInput(f"{exc}; copy SEARCH exactly from the file as shown") from None
    if not changed:
        raise InvalidToolInput("the edits change nothing")
    return description, data["hypothesis"].strip(), edits
