"""The Claude agent: asks a Claude model, through the official SDK's Messages API, for the next experiment.

One request per proposal, built by `prompt.py`: the system prompt and the one tool, `propose_experiment`,
form a static prefix marked for prompt caching; the user message carries the editable files at the branch
head and a digest of the history. The answer must be a call of that tool; its input is checked by
`anthropic_checks.py` (schema, editable paths, and that the edits apply to the files), as are the options.
A bad answer is sent back once in the same conversation with the reason; a second bad one is a
`ProposalError`. When the engine still cannot apply the edits (the branch moved while the model thought),
it asks once more with `ctx.feedback`.

The default model, Claude Sonnet 5.5, thinks (adaptive thinking, default effort high) and refuses a forced
tool_choice: it is asked for the tool call in words, and max_tokens (thinking plus answer) and timeout_s
leave room for the thinking. Every option can be overridden in [agent] or [agent.anthropic].

Failures of the API are retried twice over: the SDK retries 429, 5xx, dropped connections and timeouts
itself (`max_retries`, `timeout_s`), and around it a patient loop waits with exponential backoff (capped
at `retry_cap_s`) through an outage, telling `self.on_status` why, and gives up only after `max_wait_s`
of continuous failure. An answer that is not the Messages API's (a proxy's HTML page with status 200, an
empty body, JSON of another shape) counts as an outage; given up on, it is named with the base URL to
check. A refusal that a person must fix (bad key, unknown model) stops at once.

The API key comes from options["api_key"] or ANTHROPIC_API_KEY; it is handed to the SDK and nowhere else
(no log, message, proposal or usage holds it).

Must not import: git, torch, the store, runner, ledger or engine. Never writes to disk.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Callable
from typing import Any

import anthropic

from nightlab.server.agents.anthropic_checks import (
    PRICE_KEYS,
    check_temperature,
    not_a_message,
    unreadable,
    validate_tool_input,
)
from nightlab.server.agents.anthropic_checks import InvalidToolInput as _Invalid
from nightlab.server.agents.anthropic_checks import parse_options as _options
from nightlab.server.agents.base import AgentError, ProposalError
from nightlab.server.agents.prompt import TOOL_NAME, system_prompt, tool_definition, user_prompt
from nightlab.server.core.types import ExperimentContext, FileEdit, Proposal

__all__ = [
    "AnthropicAgent",
    "ProposalError",
    "TOOL_NAME",
    "PRICES",
    "validate_tool_input",
    "price_for",
    "cost_usd",
    "system_prompt",
    "user_prompt",
]

# USD per million tokens: (input, output, 5-minute cache write, cache read), from Anthropic's pricing
# and model pages. Keys are model ids without a date suffix.
PRICES: dict[str, tuple[float, float, float, float]] = {
    "claude-fable-5-1": (10.0, 50.0, 12.5, 0.25),
    "claude-mythos-5-1": (10.0, 50.0, 12.5, 0.25),
    "claude-fable-5": (10.0, 50.0, 12.5, 1.0),
    "claude-mythos-5": (10.0, 50.0, 12.5, 1.0),
    "claude-opus-5-5": (4.0, 20.0, 5.0, 0.20),
    "claude-opus-5": (5.0, 25.0, 6.25, 0.50),
    "claude-opus-4-8": (5.0, 25.0, 6.25, 0.50),
    "claude-opus-4-7": (5.0, 25.0, 6.25, 0.50),
    "claude-opus-4-6": (5.0, 25.0, 6.25, 0.50),
    "claude-opus-4-5": (5.0, 25.0, 6.25, 0.50),
    "claude-opus-4-1": (15.0, 75.0, 18.75, 1.50),
    "claude-opus-4-0": (15.0, 75.0, 18.75, 1.50),
    "claude-opus-4": (15.0, 75.0, 18.75, 1.50),
    "claude-sonnet-5-5": (2.0, 10.0, 2.5, 0.10),  # cache reads cut from 0.20 on 2026-10-07
    "claude-sonnet-5": (2.0, 10.0, 2.5, 0.20),
    "claude-sonnet-4-6": (3.0, 15.0, 3.75, 0.30),
    "claude-sonnet-4-5": (3.0, 15.0, 3.75, 0.30),
    "claude-sonnet-4-0": (3.0, 15.0, 3.75, 0.30),
    "claude-sonnet-4": (3.0, 15.0, 3.75, 0.30),
    "claude-3-7-sonnet": (3.0, 15.0, 3.75, 0.30),
    "claude-haiku-5-5": (0.10, 0.50, 0.125, 0.01),  # prompts up to 100k tokens; see LONG_PROMPT
    "claude-haiku-4-5": (1.0, 5.0, 1.25, 0.10),
    "claude-3-5-haiku": (0.80, 4.0, 1.0, 0.08),
}
# A request whose prompt (input + cache writes + cache reads) is longer than the threshold pays other rates.
LONG_PROMPT: dict[str, tuple[int, tuple[float, float, float, float]]] = {
    "claude-haiku-5-5": (100_000, (0.50, 2.50, 0.625, 0.05))
}
# An unknown model is priced like the dearest Opus, so a cost cap trips early rather than late.
DEFAULT_PRICE = (15.0, 75.0, 18.75, 1.50)
# Models that answer a forced tool_choice with a 400; they are asked for the tool call in words instead.
NO_FORCED_TOOL = {"claude-opus-5-5", "claude-sonnet-5-5", "claude-fable-5-1", "claude-mythos-5-1"}


# --------------------------------------------------------------------------------------------------
# prices


def _base_model(model: str) -> str:
    m = model.split("/")[-1].removeprefix("anthropic.")
    m = re.sub(r"(\[1m\]|-v\d+(:\d+)?|[-@]\d{8})+$", "", m)  # a date, a Bedrock version, the 1M-context tag
    return m


def price_for(
    model: str, overrides: dict[str, float] | None = None, prompt_tokens: int = 0
) -> tuple[tuple[float, float, float, float], str]:
    """The four prices for a model (with a request's prompt length), and a note when they are a guess."""
    base = _base_model(model)
    note = ""
    if base in PRICES:
        price = PRICES[base]
        if base in LONG_PROMPT and prompt_tokens > LONG_PROMPT[base][0]:
            price = LONG_PROMPT[base][1]
    else:
        price = DEFAULT_PRICE
        note = (
            f"unknown model {model!r}: priced at the conservative default "
            f"{'/'.join(f'{p:g}' for p in DEFAULT_PRICE)} USD per million tokens "
            "(input/output/cache write/cache read); set [agent.anthropic] prices to correct it"
        )
    if overrides:
        price = tuple(float(overrides.get(k, p)) for k, p in zip(PRICE_KEYS, price, strict=False))  # type: ignore[assignment]
        note = ""
    return price, note


def cost_usd(usage: dict[str, int], price: tuple[float, float, float, float]) -> float:
    return (
        usage.get("input_tokens", 0) * price[0]
        + usage.get("output_tokens", 0) * price[1]
        + usage.get("cache_creation_input_tokens", 0) * price[2]
        + usage.get("cache_read_input_tokens", 0) * price[3]
    ) / 1e6


# --------------------------------------------------------------------------------------------------
# the agent


def _transient(exc: anthropic.APIStatusError) -> bool:
    return exc.status_code in (408, 409, 429) or exc.status_code >= 500


class AnthropicAgent:
    name = "anthropic"
    accepts_feedback = True  # the engine asks once more, with ctx.feedback, when the edits do not apply
    on_status: Callable[[str], None] | None = None  # set by the engine: says why the agent waits
    _count_calls = False

    def __init__(self, options: dict[str, Any] | None = None, seed: int = 0):
        options = dict(options or {})
        self.options = _options(options)
        self.seed = seed
        self.model: str = self.options["model"]
        self.temperature = check_temperature(self.options["temperature"])
        key = (
            options.get("api_key")
            or (options.get("anthropic") or {}).get("api_key")
            or os.environ.get("ANTHROPIC_API_KEY")
        )
        if not key or not isinstance(key, str):
            raise AgentError(
                "the anthropic agent needs an API key: set ANTHROPIC_API_KEY in the environment "
                'of the loop (or use agent = "offline")'
            )
        self.__key = key
        force = self.options["force_tool"]
        self.force_tool: bool = (_base_model(self.model) not in NO_FORCED_TOOL) if force is None else force
        self.options.pop("api_key", None)

    def __repr__(self) -> str:
        return f"AnthropicAgent(model={self.model!r})"

    # ---- the SDK

    def _client(self, counter: list[int]) -> anthropic.AsyncAnthropic:
        async def count_attempts(request: Any, call_next: Any) -> Any:
            counter[0] += 1  # the SDK runs middleware once per HTTP attempt, its own retries included
            return await call_next(request)

        # A client per proposal: an httpx pool must not outlive the event loop it was made in.
        common = dict(
            api_key=self.__key,
            base_url=self.options["base_url"],
            timeout=self.options["timeout_s"],
            max_retries=self.options["max_retries"],
        )
        try:
            return anthropic.AsyncAnthropic(**common, middleware=[count_attempts])
        except TypeError:  # an SDK before 2.0 has no middleware: count calls, not the SDK's own retries
            self._count_calls = True
            return anthropic.AsyncAnthropic(**common)

    def _request(self, ctx: ExperimentContext, messages: list[dict[str, Any]]) -> dict[str, Any]:
        tool = {**tool_definition(), "cache_control": {"type": "ephemeral"}}
        kwargs: dict[str, Any] = {
            "model": self.model,
            "max_tokens": self.options["max_tokens"],
            "messages": messages,
            "system": [{"type": "text", "text": system_prompt(ctx), "cache_control": {"type": "ephemeral"}}],
            "tools": [tool],
            "tool_choice": {"type": "tool", "name": TOOL_NAME} if self.force_tool else {"type": "auto"},
        }
        if self.temperature is not None:
            kwargs["temperature"] = self.temperature
        if self.options["effort"]:
            kwargs["output_config"] = {"effort": self.options["effort"]}
        return kwargs

    def _scrub(self, text: str) -> str:
        return text.replace(self.__key, "***") if self.__key else text

    def _status(self, text: str) -> None:
        if self.on_status is not None:
            self.on_status(self._scrub(text))

    def _refusal(self, exc: anthropic.APIStatusError) -> str:
        """Why an error answer is worth another try ("": at once); an AgentError when a person must act."""
        message = self._scrub(str(getattr(exc, "message", exc)))
        if exc.status_code == 400 and self.force_tool and "tool" in message.lower():
            # Newer models refuse a forced tool (with thinking on, or at all): ask for it in words.
            # At most one extra request: a second 400 is not taken for this again.
            self.force_tool = False
            self._status(f"{self.model} refuses a forced tool call; asking for it in the prompt instead")
            return ""
        if not _transient(exc):
            hint = {401: " (check ANTHROPIC_API_KEY)", 403: " (check ANTHROPIC_API_KEY)"}.get(exc.status_code, "")
            if exc.status_code == 404:
                hint = f" (check the model, {self.model!r}, and the API's base URL)"
            raise AgentError(f"the Claude API refused the request (HTTP {exc.status_code}){hint}: {message}") from None
        return f"HTTP {exc.status_code}"

    async def _create(
        self,
        client: anthropic.AsyncAnthropic,
        ctx: ExperimentContext,
        messages: list[dict[str, Any]],
        counter: list[int],
    ) -> Any:
        """One answer, however long an outage lasts (up to max_wait_s of continuous failure). An answer
        that is not the Messages API's (a proxy's HTML page, an empty body) is taken for an outage too."""
        failing_since: float | None = None
        attempt = malformed = 0
        while True:
            request = self._request(ctx, messages)
            reason = alien = ""  # alien: what came instead of a Messages response
            try:
                if self._count_calls:
                    counter[0] += 1
                response = await client.messages.create(**request)
                alien = not_a_message(response)
                if not alien:
                    return response
            except anthropic.APIStatusError as exc:
                reason = self._refusal(exc)
                if not reason:
                    continue
            except anthropic.APITimeoutError:
                reason = f"no answer within {self.options['timeout_s']:g} s"
            except anthropic.APIConnectionError as exc:
                reason = f"connection failed ({self._scrub(str(exc.__cause__ or exc))})"
            except (ValueError, anthropic.APIResponseValidationError) as exc:  # a body that does not parse
                alien = unreadable(exc)
            malformed = malformed + 1 if alien else 0
            if alien:
                alien = self._scrub(alien)
                reason = f"an answer that is not the Messages API's: {alien}"
            now = time.monotonic()
            failing_since = now if failing_since is None else failing_since
            failed_for = now - failing_since
            delay = min(
                self.options["retry_base_s"] * 2**attempt,
                self.options["retry_cap_s"],
                self.options["max_wait_s"] - failed_for,
            )
            if delay <= 0:
                raise AgentError(self._gave_up(client, reason, failed_for, alien, malformed))
            self._status(f"Claude API: {reason}; trying again in {delay:.0f} s (failing for {failed_for:.0f} s)")
            await asyncio.sleep(delay)
            attempt += 1

    def _gave_up(self, client: anthropic.AsyncAnthropic, reason: str, failed_for: float, alien: str, n: int) -> str:
        if alien:
            return (
                f"the API at {client.base_url} answered something that is not the Messages API "
                f"({alien}) {n} time{'s' * (n > 1)} in a row over {failed_for:.0f} s; "
                "check ANTHROPIC_BASE_URL (or [agent.anthropic] base_url) and your proxy, then start the loop again"
            )
        return (
            f"the Claude API has been failing for {failed_for:.0f} s (last: {reason}); "
            "check the network and https://status.anthropic.com, then start the loop again"
        )

    # ---- one proposal

    async def propose(self, ctx: ExperimentContext) -> Proposal:
        started = time.monotonic()
        counter = [0]
        totals = {"input_tokens": 0, "output_tokens": 0, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
        cost = 0.0
        note = ""

        def usage() -> dict[str, Any]:
            u: dict[str, Any] = {
                **totals,
                "cost_usd": round(cost, 6),
                "model": self.model,
                "latency_s": round(time.monotonic() - started, 3),
                "requests": counter[0],
            }
            if note:
                u["price_note"] = note
            return u

        prompt = user_prompt(ctx, self.options["history_last_k"])
        messages: list[dict[str, Any]] = [{"role": "user", "content": prompt}]
        async with self._client(counter) as client:
            for turn in (1, 2):
                response = await self._create(client, ctx, messages, counter)
                got = {k: int(getattr(response.usage, k, 0) or 0) for k in totals}
                for k, v in got.items():
                    totals[k] += v
                prompt_tokens = sum(
                    got[k] for k in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
                )
                price, note = price_for(self.model, self.options["prices"], prompt_tokens)
                cost += cost_usd(got, price)
                calls = [b for b in response.content if getattr(b, "type", "") == "tool_use"]
                try:
                    description, hypothesis, edits = self._read(response, calls, ctx)
                except _Invalid as exc:
                    reason = str(exc)
                    if turn == 2:
                        raise ProposalError(
                            f"{self.model} gave no usable proposal twice; last: {reason}", usage=usage()
                        ) from None
                    messages += self._correction(response, calls, reason)
                    continue
                return Proposal(
                    description=description,
                    edits=edits,
                    hypothesis=hypothesis,
                    agent=self.name,
                    usage=usage(),
                    meta={"model": self.model, "corrected": turn == 2, "stop_reason": response.stop_reason},
                )
        raise AssertionError("unreachable")  # pragma: no cover

    def _read(self, response: Any, calls: list[Any], ctx: ExperimentContext) -> tuple[str, str, list[FileEdit]]:
        if not calls:
            cut = " (the answer was cut off at max_tokens)" if response.stop_reason == "max_tokens" else ""
            raise _Invalid(f"the answer has no {TOOL_NAME} tool call{cut}")
        wrong = [c.name for c in calls if c.name != TOOL_NAME]
        if wrong:
            raise _Invalid(f"unknown tool {wrong[0]!r}; the only tool is {TOOL_NAME}")
        if len(calls) > 1:
            raise _Invalid(f"{len(calls)} tool calls; call {TOOL_NAME} exactly once")
        try:
            return validate_tool_input(calls[0].input, ctx)
        except _Invalid as exc:
            cut = "; the answer was cut off at max_tokens, keep it shorter"
            raise _Invalid(f"{exc}{cut if response.stop_reason == 'max_tokens' else ''}") from None

    def _correction(self, response: Any, calls: list[Any], reason: str) -> list[dict[str, Any]]:
        """The bad answer and the reason, to go on the same conversation (the model gets one more try)."""
        assistant = {"role": "assistant", "content": [b.to_dict(mode="json") for b in response.content]}
        ask = f"Call {TOOL_NAME} once more, with a corrected input."
        if calls:  # every tool_use needs its tool_result in the next user turn
            content: list[dict[str, Any]] = [
                {
                    "type": "tool_result",
                    "tool_use_id": c.id,
                    "is_error": True,
                    "content": f"Invalid {TOOL_NAME} call: {reason}. {ask}",
                }
                for c in calls
            ]
        else:  # a tool_result can only answer a tool_use: say it in words
            content = [{"type": "text", "text": f"Your answer could not be used: {reason}. {ask}"}]
        return [assistant, {"role": "user", "content": content}]
