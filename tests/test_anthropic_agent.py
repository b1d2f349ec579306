"""The Claude agent: the real anthropic SDK against a fake API server on 127.0.0.1 (tests/support/fake_anthropic.py).

Nothing here mocks the SDK: every test sends real HTTP requests and reads what the server recorded.
"""

from __future__ import annotations

import json
from dataclasses import asdict

import pytest

from nightlab.server.agents.anthropic_agent import (
    DEFAULT_PRICE,
    PRICES,
    AnthropicAgent,
    _Invalid,
    price_for,
    validate_tool_input,
)
from nightlab.server.agents.base import AgentError, ProposalError, make_agent
from nightlab.server.changes.edits import apply_edits
from nightlab.server.core.types import ExperimentContext, HistoryItem
from support.fake_anthropic import (
    disconnect,
    html_page,
    http_error,
    overloaded,
    rate_limited,
    raw,
    server_error,
    slow,
    text_reply,
    tool_call,
)

KEY = "sk-ant-test-0123456789-secret"
TRAIN = """# the model
LR = 0.003
DEPTH = 4


def train():
    for step in range(10):
        loss = step * LR
    return loss
"""
PROGRAM = "# Nightlab experiment: program\nLower val_bpb. PROGRAM-MARKER-42."
VALID = {
    "description": "LR 0.003 -> 0.004",
    "hypothesis": "a higher LR trains faster in a short budget",
    "edits": [{"path": "train.py", "search": "LR = 0.003\n", "replace": "LR = 0.004\n"}],
}
FAST = {"retry_base_s": 0.01, "max_retries": 0, "timeout_s": 5}
# The SDK warns on every request to a model near its end of life (claude-sonnet-4-5, named below).
pytestmark = pytest.mark.filterwarnings("ignore:The model .* is deprecated:DeprecationWarning")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    """No test reaches the real API: the key is fake and a forgotten base_url lands on a closed port."""
    for name in (
        "ANTHROPIC_AUTH_TOKEN",
        "ANTHROPIC_CUSTOM_HEADERS",
        "ANTHROPIC_PROFILE",
        "ANTHROPIC_CONFIG_DIR",
        "ANTHROPIC_WEBHOOK_SIGNING_KEY",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")


def ctx(**kw) -> ExperimentContext:
    base = dict(program=PROGRAM, files={"train.py": TRAIN}, editable=["train.py"], history=[])
    return ExperimentContext(**{**base, **kw})


def agent(fake, **options) -> AnthropicAgent:
    a = AnthropicAgent({"anthropic": {"base_url": fake.base_url, **FAST, **options}}, seed=0)
    a.statuses = []
    a.on_status = a.statuses.append
    return a


def user_text(request) -> str:
    content = request["body"]["messages"][0]["content"]
    return content if isinstance(content, str) else "".join(b.get("text", "") for b in content)


# --------------------------------------------------------------------------------------------------
# the happy path, the request


async def test_valid_proposal_applies_to_the_files(fake_anthropic):
    fake_anthropic.script(tool_call(VALID))
    p = await agent(fake_anthropic).propose(ctx())
    assert (p.description, p.agent) == ("LR 0.003 -> 0.004", "anthropic")
    assert p.hypothesis.startswith("a higher LR")
    changed = apply_edits({"train.py": TRAIN}, p.edits, ["train.py"], ["prepare.py"])
    assert "LR = 0.004\n" in changed["train.py"]
    (req,) = fake_anthropic.requests
    body = req["body"]
    assert req["path"] == "/v1/messages"
    # the default: Claude Sonnet 5.5, which thinks (room for it in max_tokens) and refuses a forced tool
    assert (body["model"], body["max_tokens"]) == ("claude-sonnet-5-5", 16000)
    assert "temperature" not in body and "output_config" not in body  # effort: the model's default
    assert body["tool_choice"] == {"type": "auto"}
    assert "Answer only by calling the propose_experiment tool" in body["system"][-1]["text"]
    (tool,) = body["tools"]
    assert tool["name"] == "propose_experiment"
    assert set(tool["input_schema"]["required"]) == {"description", "hypothesis", "edits"}
    # the static prefix (tools, then system) is marked for prompt caching; the user turn is not
    assert tool["cache_control"] == {"type": "ephemeral"}
    assert body["system"][-1]["cache_control"] == {"type": "ephemeral"}
    assert "cache_control" not in json.dumps(body["messages"])


async def test_edits_as_one_string_of_search_replace_blocks(fake_anthropic):
    blocks = "train.py\n<<<<<<< SEARCH\nDEPTH = 4\n=======\nDEPTH = 5\n>>>>>>> REPLACE\n"
    fake_anthropic.script(tool_call({**VALID, "description": "DEPTH 4 -> 5", "edits": blocks}))
    p = await agent(fake_anthropic).propose(ctx())
    assert "DEPTH = 5\n" in apply_edits({"train.py": TRAIN}, p.edits, ["train.py"], [])["train.py"]


async def test_prompt_holds_program_rules_files_history_and_feedback(fake_anthropic):
    history = [
        HistoryItem(0, "baseline", "baseline", 1.50, None, reason="baseline: 1.500000"),
        *[HistoryItem(i, f"old idea {i}", "discard", 1.6, 0.1, f"train.py: X {i} -> {i + 1}") for i in range(1, 3)],
        HistoryItem(3, "old idea 3", "discard", 1.499, -0.001, reason="within noise (0.5 sigma)"),
        HistoryItem(4, "DEPTH 4 -> 5", "keep", 1.40, -0.10, "train.py: DEPTH 4 -> 5"),
        HistoryItem(
            5,
            "swap GELU for ReLU",
            "crash",
            None,
            None,
            "train.py: +3 -1 lines",
            reason="exit code 1: RuntimeError: shape mismatch " + "x" * 300,
        ),
    ]
    c = ctx(
        history=history,
        best=1.40,
        noise_sigma=0.0021,
        in_flight=["WARMUP 10 -> 20"],
        feedback="edit 1 of 1 on train.py: SEARCH text not found",
    )
    fake_anthropic.script(tool_call(VALID))
    await agent(fake_anthropic, history_last_k=2).propose(c)
    body = fake_anthropic.requests[0]["body"]
    system = body["system"][-1]["text"]
    assert "PROGRAM-MARKER-42" in system
    assert "only these files: train.py" in system and "val_bpb; lower is better" in system
    assert "Simplicity criterion" in system and "match the file" in system
    text = user_text(fake_anthropic.requests[0])
    assert text.startswith("IMPORTANT. Your previous proposal could not be applied: edit 1 of 1 on train.py")
    assert '<file path="train.py">\n' + TRAIN in text
    assert "#4 [keep] DEPTH 4 -> 5: 1.400000 (delta -0.100000); train.py: DEPTH 4 -> 5" in text
    assert "#5 [crash] swap GELU for ReLU" in text  # among the last K
    # the verdict's reason, one short line: how it crashed, how close a discard came
    crash_line = next(line for line in text.splitlines() if line.startswith("#5 "))
    assert "; why: exit code 1: RuntimeError: shape mismatch xxx" in crash_line and crash_line.endswith("...")
    assert len(crash_line) < 250
    assert "- old idea 1 (discard)" in text  # older ones: a compact list of ideas tried, with the outcome
    assert "- old idea 3 (discard: within noise (0.5 sigma))" in text
    assert "why: baseline" not in text  # a baseline's reason only repeats its metric
    assert "Best val_bpb so far: 1.400000" in text and "0.002100" in text
    assert "- WARMUP 10 -> 20" in text


async def test_base_url_from_the_environment(fake_anthropic, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_BASE_URL", fake_anthropic.base_url)
    fake_anthropic.script(tool_call(VALID))
    p = await AnthropicAgent({"anthropic": FAST}).propose(ctx())
    assert p.description == VALID["description"] and len(fake_anthropic.requests) == 1


async def test_options_flat_or_nested_and_registered_names(fake_anthropic):
    fake_anthropic.script(tool_call(VALID))
    a = make_agent(
        "claude",
        {
            "model": "flat-model",
            "base_url": fake_anthropic.base_url,
            **FAST,
            "anthropic": {"model": "claude-haiku-4-5", "max_tokens": 1000, "effort": "low"},
        },
    )
    assert isinstance(a, AnthropicAgent) and isinstance(make_agent("anthropic"), AnthropicAgent)
    await a.propose(ctx())
    body = fake_anthropic.requests[0]["body"]
    assert (body["model"], body["max_tokens"]) == ("claude-haiku-4-5", 1000)
    assert body["output_config"] == {"effort": "low"}
    with pytest.raises(AgentError, match="max_tokens must be an integer"):
        AnthropicAgent({"anthropic": {"max_tokens": "lots"}})
    with pytest.raises(AgentError, match="unknown option.*modle"):
        AnthropicAgent({"anthropic": {"modle": "x"}})
    with pytest.raises(AgentError, match="prices: dinner"):
        AnthropicAgent({"anthropic": {"prices": {"dinner": 3}}})
    with pytest.raises(AgentError, match="temperature is not accepted"):
        AnthropicAgent({"temperature": 0.7})


# --------------------------------------------------------------------------------------------------
# the key


async def test_key_goes_only_in_a_header(fake_anthropic):
    fake_anthropic.script(rate_limited(), tool_call(VALID))
    a = agent(fake_anthropic, max_retries=0)
    p = await a.propose(ctx())
    for req in fake_anthropic.requests:
        auth = req["headers"].get("x-api-key", "") + req["headers"].get("authorization", "")
        assert KEY in auth
        assert KEY not in req["raw"] and KEY not in req["path"]
    assert KEY not in json.dumps(asdict(p)) and KEY not in repr(a) and KEY not in " ".join(a.statuses)


async def test_key_from_options_beats_the_environment(fake_anthropic, monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    fake_anthropic.script(tool_call(VALID))
    a = AnthropicAgent({"api_key": "sk-from-options", "anthropic": {"base_url": fake_anthropic.base_url}})
    await a.propose(ctx())
    assert "sk-from-options" in json.dumps(fake_anthropic.requests[0]["headers"])


def test_prompt_module_needs_no_sdk_or_git():
    """prompt.py builds text from a context: importing it loads neither the SDK nor git."""
    import subprocess
    import sys

    code = (
        "import sys, nightlab.server.agents.prompt as p; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'anthropic', 'git', 'httpx', 'torch'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_missing_key_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    with pytest.raises(AgentError, match="set ANTHROPIC_API_KEY"):
        make_agent("anthropic", {})


# --------------------------------------------------------------------------------------------------
# failures of the API


async def test_429_500_disconnect_then_success(fake_anthropic):
    fake_anthropic.script(rate_limited(), server_error(), disconnect(), tool_call(VALID))
    a = agent(fake_anthropic, max_retries=1)  # the SDK retries the 429, the loop the 500, the SDK the drop
    p = await a.propose(ctx())
    assert p.description == VALID["description"]
    assert p.usage["requests"] == 4 and len(fake_anthropic.requests) == 4
    assert p.usage["input_tokens"] == 120  # failed requests cost nothing
    assert a.statuses and "HTTP 500" in a.statuses[0] and "trying again" in a.statuses[0]


async def test_sdk_retries_rate_limits_and_overload_by_itself(fake_anthropic):
    fake_anthropic.script(rate_limited(), overloaded(), server_error(), tool_call(VALID))
    a = agent(fake_anthropic, max_retries=3)
    p = await a.propose(ctx())
    assert p.usage["requests"] == 4 and a.statuses == []


async def test_slow_answer_times_out_and_is_retried(fake_anthropic):
    fake_anthropic.script(slow(5.0, tool_call(VALID)), tool_call(VALID))
    a = agent(fake_anthropic, timeout_s=1.0, max_retries=0)  # 1 s: a loaded machine still answers in time
    p = await a.propose(ctx())
    assert p.usage["requests"] == 2 and "no answer within 1 s" in a.statuses[0]


async def test_outage_gives_up_after_max_wait(fake_anthropic):
    fake_anthropic.script(*[overloaded() for _ in range(30)])
    a = agent(fake_anthropic, max_wait_s=0.5, retry_base_s=0.05)
    with pytest.raises(AgentError, match="has been failing for"):
        await a.propose(ctx())
    assert len(a.statuses) >= 2 and all("HTTP 529" in s for s in a.statuses)
    assert 2 <= len(fake_anthropic.requests) < 30


async def test_answers_that_are_not_the_messages_api_are_retried(fake_anthropic):
    """A proxy's HTML page with status 200, empty bodies (as JSON and as HTML) and JSON of other shapes: each is
    retried like an outage, with a status saying what came; then a valid answer is the proposal."""
    fake_anthropic.script(
        html_page(),
        raw("", content_type="application/json"),
        raw(""),
        raw('{"type": "error", "error": {"message": "no"}}', content_type="application/json"),
        raw("[1, 2]", content_type="application/json"),
        raw("plain words", content_type="text/plain"),
        tool_call(VALID),
    )
    a = agent(fake_anthropic, max_retries=3)  # the SDK does not retry a 200: the agent's loop does
    p = await a.propose(ctx())
    assert p.description == VALID["description"] and len(fake_anthropic.requests) == 7
    assert p.usage["requests"] == 7 and p.usage["input_tokens"] == 120
    assert len(a.statuses) == 6 and all("not the Messages API's" in s and "trying again" in s for s in a.statuses)
    assert "an HTML page, beginning '<!DOCTYPE html>" in a.statuses[0]
    assert "an empty body" in a.statuses[1] and "an empty body" in a.statuses[2]
    assert all("JSON that is not a Messages response" in s for s in a.statuses[3:5])
    assert "not JSON, beginning 'plain words'" in a.statuses[5]


async def test_always_html_gives_up_in_plain_words(fake_anthropic):
    fake_anthropic.script(*[html_page() for _ in range(40)])
    a = agent(fake_anthropic, max_wait_s=0.3, retry_base_s=0.02)
    with pytest.raises(AgentError) as info:
        await a.propose(ctx())
    n = len(fake_anthropic.requests)
    assert 2 <= n < 40
    assert str(info.value).startswith(
        f"the API at {fake_anthropic.base_url} answered something that is not the Messages API (an HTML page, "
    )
    assert f") {n} times in a row over 0 s; check ANTHROPIC_BASE_URL" in str(info.value)


@pytest.mark.parametrize(
    "status,match", [(401, "HTTP 401.*check ANTHROPIC_API_KEY"), (404, "HTTP 404.*check the model")]
)
async def test_refusals_a_person_must_fix_stop_at_once(fake_anthropic, status, match):
    fake_anthropic.script(http_error(status, f"echo {KEY}"), tool_call(VALID))
    a = agent(fake_anthropic, max_retries=3)
    with pytest.raises(AgentError, match=match) as info:
        await a.propose(ctx())
    assert len(fake_anthropic.requests) == 1 and KEY not in str(info.value)


async def test_model_that_refuses_a_forced_tool_is_asked_in_words(fake_anthropic):
    fake_anthropic.script(
        http_error(400, "tool_choice forced tool use is not supported for this model"),
        tool_call(VALID),
        tool_call(VALID),
    )
    a = agent(fake_anthropic, model="claude-sonnet-4-6")  # forced by default; this one says it refuses
    await a.propose(ctx())
    await a.propose(ctx())
    choices = [r["body"]["tool_choice"] for r in fake_anthropic.requests]
    assert choices == [{"type": "tool", "name": "propose_experiment"}, {"type": "auto"}, {"type": "auto"}]
    fake_anthropic.script(tool_call(VALID))
    await agent(fake_anthropic, model="claude-sonnet-5-5").propose(ctx())
    assert fake_anthropic.requests[-1]["body"]["tool_choice"] == {"type": "auto"}


# --------------------------------------------------------------------------------------------------
# bad answers


async def test_invalid_tool_input_then_valid(fake_anthropic):
    fake_anthropic.script(tool_call({"description": "no edits", "hypothesis": "h"}), tool_call(VALID))
    p = await agent(fake_anthropic).propose(ctx())
    assert p.description == VALID["description"] and p.meta["corrected"] is True
    assert p.usage["requests"] == 2 and p.usage["input_tokens"] == 240
    first, second = fake_anthropic.requests
    msgs = second["body"]["messages"]
    assert [m["role"] for m in msgs] == ["user", "assistant", "user"]
    tool_use = msgs[1]["content"][-1]
    assert tool_use["type"] == "tool_use" and tool_use["input"] == {"description": "no edits", "hypothesis": "h"}
    (result,) = msgs[2]["content"]
    assert result["type"] == "tool_result" and result["is_error"] is True
    assert result["tool_use_id"] == tool_use["id"] and "missing required key(s): edits" in result["content"]
    assert second["body"]["system"] == first["body"]["system"]  # the cached prefix is unchanged


async def test_text_answer_then_valid(fake_anthropic):
    fake_anthropic.script(text_reply(), tool_call(VALID))
    p = await agent(fake_anthropic).propose(ctx())
    assert p.description == VALID["description"]
    last = fake_anthropic.requests[1]["body"]["messages"][-1]
    assert last["role"] == "user" and last["content"][0]["type"] == "text"
    assert "no propose_experiment tool call" in last["content"][0]["text"]


async def test_two_bad_answers_are_a_proposal_error(fake_anthropic):
    bad = {**VALID, "edits": [{"path": "prepare.py", "search": "x", "replace": "y"}]}
    fake_anthropic.script(text_reply(), tool_call(bad))
    with pytest.raises(ProposalError, match="'prepare.py' is not editable") as info:
        await agent(fake_anthropic).propose(ctx())
    assert info.value.usage["requests"] == 2 and info.value.usage["cost_usd"] > 0


@pytest.mark.parametrize(
    "data,reason",
    [
        ([1], "must be an object"),
        ({"description": "d", "edits": []}, "missing required key(s): hypothesis"),
        ({**VALID, "description": 3}, "description must be a string"),
        ({**VALID, "description": "  "}, "description is empty"),
        ({**VALID, "edits": []}, "edits is empty"),
        ({**VALID, "edits": {"path": "train.py"}}, "edits must be a list"),
        ({**VALID, "edits": [{"path": "train.py", "search": "LR = 0.003\n"}]}, "edit 1: replace must be a string"),
        ({**VALID, "edits": [{"path": "../x.py", "search": "a", "replace": "b"}]}, "is not editable"),
        ({**VALID, "edits": [{"path": "train.py", "search": "LR = 9\n", "replace": "x"}]}, "SEARCH text not found"),
        (
            {**VALID, "edits": [{"path": "train.py", "search": "LR = 0.003\n", "replace": "LR = 0.003\n"}]},
            "the edits change nothing",
        ),
        ({**VALID, "edits": "train.py\n<<<<<<< SEARCH\nLR\n"}, "no ======= line"),
    ],
)
def test_tool_input_validation(data, reason):
    with pytest.raises(_Invalid) as info:
        validate_tool_input(data, ctx())
    assert reason in str(info.value)


def test_tool_input_validation_accepts_and_tidies():
    d, h, edits = validate_tool_input(
        {
            **VALID,
            "description": "LR\n up",
            "edits": [{"path": "./train.py", "search": "LR = 0.003\n", "replace": "LR = 0.004\n"}],
        },
        ctx(),
    )
    assert d == "LR up" and edits[0].path == "train.py"


# --------------------------------------------------------------------------------------------------
# usage and cost


async def test_cost_from_usage_and_price_table(fake_anthropic):
    u = {
        "input_tokens": 1000,
        "output_tokens": 500,
        "cache_creation_input_tokens": 2000,
        "cache_read_input_tokens": 3000,
    }
    fake_anthropic.script(tool_call(VALID, usage=u))
    p = await agent(fake_anthropic, model="claude-sonnet-4-5-20250929").propose(ctx())
    assert {k: p.usage[k] for k in u} == u
    assert p.usage["cost_usd"] == pytest.approx((1000 * 3 + 500 * 15 + 2000 * 3.75 + 3000 * 0.30) / 1e6)
    assert p.usage["model"] == "claude-sonnet-4-5-20250929" and p.usage["latency_s"] >= 0
    assert "price_note" not in p.usage
    fake_anthropic.script(tool_call(VALID, usage=u))
    p = await agent(fake_anthropic, model="claude-next-9", prices={"output": 1.0}).propose(ctx())
    assert p.usage["cost_usd"] == pytest.approx((1000 * 15 + 500 * 1 + 2000 * 18.75 + 3000 * 1.5) / 1e6)
    fake_anthropic.script(tool_call(VALID, usage=u))
    p = await agent(fake_anthropic, model="claude-next-9").propose(ctx())
    assert "unknown model 'claude-next-9'" in p.usage["price_note"]


def test_price_table():
    assert price_for("claude-opus-4-5-20251101")[0] == PRICES["claude-opus-4-5"]
    assert price_for("claude-haiku-5-5", prompt_tokens=50_000)[0][0] == 0.10
    assert price_for("claude-haiku-5-5", prompt_tokens=150_000)[0][0] == 0.50
    assert price_for("claude-opus-4-9") == (DEFAULT_PRICE, price_for("claude-opus-4-9")[1])
    assert price_for("claude-opus-4-9")[1].startswith("unknown model")
