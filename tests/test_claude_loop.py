"""The whole loop with the Claude agent, in-process: the real Engine builds the real AnthropicAgent from
nightlab.toml's [agent] table, whose base_url points at the fake Messages API (tests/support/fake_anthropic.py);
the real SDK talks to it over a socket, and every experiment trains the stand-in of tests/support/workspace.py
(its val_bpb is its knob X) in a real subprocess. Nothing mocks the SDK.

Every test ends by checking the ledger (numbers 1..N, each final exactly once, one results.tsv row each)
and that the API key reached no file under .nightlab/ and no commit.
"""

from __future__ import annotations

import asyncio
import json
import subprocess

import pytest

from nightlab.server.core.settings import load_settings
from nightlab.server.loop.engine import Engine
from support.fake_anthropic import (
    disconnect,
    html_page,
    http_error,
    only_this_key,
    rate_limited,
    raw,
    server_error,
    slow,
    text_reply,
    tool_call,
)
from support.workspace import STAND_IN, git, make_workspace, merge_toml

KEY = "sk-ant-test-SECRET-123"
# the stand-in plus a knob that changes nothing (an equal result: a discard), for edits that do not
# touch X and so still apply after X was kept
TRAIN = STAND_IN.replace(
    "X = 1.0            # the metric this run reports\n", "X = 1.0            # the metric this run reports\nLR = 0.1\n"
)
assert "LR = 0.1" in TRAIN
STRICT = '[policy]\nname = "strict"\n'
IN_ORDER = "[run]\npropose_ahead = false\n"


@pytest.fixture(autouse=True)
def env(monkeypatch):
    """The key the loop would use, recognisable anywhere it might leak; nothing reaches the real API."""
    only_this_key(monkeypatch, KEY)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", "http://127.0.0.1:9")  # [agent] base_url must win over it


def edit(name, old, new, desc=None, hypothesis="it should lower val_bpb"):
    """A valid propose_experiment input that changes `name = old` to `name = new` in train.py."""
    return {
        "description": desc or f"{name} {old} -> {new}",
        "hypothesis": hypothesis,
        "edits": [{"path": "train.py", "search": f"{name} = {old}", "replace": f"{name} = {new}"}],
    }


def setup(tmp_path, fake, extra="", timeout_s=10.0, train=TRAIN):
    """A committed stand-in workspace whose [agent] is Claude on the fake API: no SDK retries (the agent's
    own loop retries, 10 ms apart), so each failure costs exactly one request."""
    ws = make_workspace(tmp_path, train)
    toml = (
        f'[agent]\nname = "claude"\nbase_url = "{fake.base_url}"\nretry_base_s = 0.01\nmax_retries = 0\n'
        f"timeout_s = {timeout_s}\n" + STRICT + extra
    )
    (ws / "nightlab.toml").write_text(merge_toml((ws / "nightlab.toml").read_text(), toml))
    git(ws, "-c", "user.name=u", "-c", "user.email=u@x", "commit", "-qam", "claude settings")
    return ws


def run_loop(ws, n, **overrides):
    engine = Engine(load_settings(ws, {"max_experiments": n, "agent": "claude", **overrides}))
    assert type(engine.agent).__name__ == "AnthropicAgent" and engine.agent.accepts_feedback
    events = []
    engine.subscribe(events.append)
    asyncio.run(engine.run())
    return engine, events


def statuses(engine):
    return [(e.number, e.status) for e in engine.ledger.experiments()]


def messages(events, level=None):
    return [e["text"] for e in events if e["type"] == "message" and level in (None, e["level"])]


def user_text(request) -> str:
    content = request["body"]["messages"][0]["content"]
    return content if isinstance(content, str) else "".join(b.get("text", "") for b in content)


def check_ledger(ws, n, final=("keep", "discard", "crash")):
    """Numbers 1..n, none lost or doubled: each has exactly one final record in experiments.jsonl (its
    latest state) and exactly one row in results.tsv."""
    records = [
        json.loads(line) for line in (ws / ".nightlab/main/experiments.jsonl").read_text().splitlines() if line.strip()
    ]
    latest = {}
    for r in records:
        latest[r["number"]] = r
    assert sorted(latest) == list(range(1, n + 1))
    for number, r in latest.items():
        assert r["status"] in final, (number, r["status"])
        assert sum(1 for x in records if x["number"] == number and x["status"] in final) == 1, number
    rows = [row.split("\t") for row in (ws / ".nightlab/main/results.tsv").read_text().splitlines()[1:]]
    assert len(rows) == n
    assert sorted((row[0], row[3]) for row in rows) == sorted((r["commit"][:7], r["status"]) for r in latest.values())


def check_no_key(ws, events=()):
    """The key is in no file under .nightlab/ (ledger, results.tsv, run logs, events, worktrees, locks,
    pgid files ...), no commit or ref of the repository, and no event."""
    files = [p for p in (ws / ".nightlab").rglob("*") if p.is_file()]
    assert files
    leaked = [str(p.relative_to(ws)) for p in files if KEY.encode() in p.read_bytes()]
    assert leaked == []
    history = subprocess.run(
        ["git", "log", "--all", "-p", "--format=%H%n%B"], cwd=ws, capture_output=True, text=True, check=True
    ).stdout
    assert "nightlab #" in history and KEY not in history
    assert KEY not in json.dumps(list(events))


def check_key_sent(fake):
    """The key did go out, in an auth header (SDK 2.x sends it as a bearer token), and only there."""
    assert fake.requests
    for req in fake.requests:
        auth = req["headers"].get("x-api-key", "") + req["headers"].get("authorization", "")
        assert KEY in auth and KEY not in req["raw"] and KEY not in req["path"]


# --------------------------------------------------------------------------------------------------
# (a) the loop


def test_full_loop_with_scripted_tool_calls(tmp_path, fake_anthropic):
    """Baseline + 3 proposals, with propose-ahead on (the default): each next proposal is drafted
    while the last one trains. Keep, discard (an equal result), keep."""
    ws = setup(tmp_path, fake_anthropic)
    fake_anthropic.script(
        tool_call(edit("X", "1.0", "0.5")),
        tool_call(edit("LR", "0.1", "0.2"), text="Now a knob that should not matter."),
        tool_call(edit("X", "0.5", "0.25")),
    )
    engine, events = run_loop(ws, 4)
    assert statuses(engine) == [(1, "keep"), (2, "keep"), (3, "discard"), (4, "keep")]
    exps = engine.ledger.experiments()
    assert [e.description for e in exps] == ["baseline", "X 1.0 -> 0.5", "LR 0.1 -> 0.2", "X 0.5 -> 0.25"]
    assert [e.metric for e in exps] == [1.0, 0.5, 0.5, 0.25]
    assert all(e.agent == "anthropic" and e.hypothesis == "it should lower val_bpb" for e in exps[1:])
    assert fake_anthropic.left == 0 and len(fake_anthropic.requests) == 3
    # what the model was sent: the default model, asked in words (it refuses a forced tool), the files
    # at the branch head, the history with each verdict's reason, and what is running now
    for req in fake_anthropic.requests:
        body = req["body"]
        assert (body["model"], body["max_tokens"], body["tool_choice"]) == (
            "claude-sonnet-5-5",
            16000,
            {"type": "auto"},
        )
        assert "lower X" in body["system"][-1]["text"]  # program.md
    last = user_text(fake_anthropic.requests[2])
    assert "\nX = 0.5 " in last  # #2 was kept: the head has it
    assert "#2 [keep] X 1.0 -> 0.5: 0.500000 (delta -0.500000); train.py" in last
    assert "why: 0.500000 is better than the best 1.000000" in last
    assert "- LR 0.1 -> 0.2" in last  # drafted while #3 trains: it is in flight, not in the history
    # git: the branch holds the kept chain
    chain = git(ws, "log", "--format=%s", "nightlab/main").splitlines()
    assert chain[:3] == ["nightlab #4: X 0.5 -> 0.25", "nightlab #2: X 1.0 -> 0.5", "nightlab #1: baseline"]
    assert events[-1] == {"type": "state", "state": "stopped", "reason": "limit reached"}
    check_ledger(ws, 4)
    check_no_key(ws, events)
    check_key_sent(fake_anthropic)


# --------------------------------------------------------------------------------------------------
# (b) failures of the API


def test_api_failures_lose_and_duplicate_no_experiment(tmp_path, fake_anthropic):
    """A 429, a 500, an answer slower than timeout_s and a dropped connection, one before each proposal:
    each is retried, and each proposal becomes exactly one experiment. The late answer to the timed-out
    request is never used."""
    ws = setup(tmp_path, fake_anthropic, IN_ORDER, timeout_s=1.5)
    fake_anthropic.script(
        rate_limited(),
        tool_call(edit("X", "1.0", "0.9")),
        server_error(),
        tool_call(edit("X", "0.9", "0.8")),
        slow(4.0, tool_call(edit("X", "0.8", "0.1", "late answer"))),
        tool_call(edit("LR", "0.1", "0.2")),
        disconnect(),
        tool_call(edit("X", "0.8", "0.7")),
    )
    engine, events = run_loop(ws, 5)
    assert statuses(engine) == [(1, "keep"), (2, "keep"), (3, "keep"), (4, "discard"), (5, "keep")]
    exps = engine.ledger.experiments()
    assert [e.description for e in exps[1:]] == ["X 1.0 -> 0.9", "X 0.9 -> 0.8", "LR 0.1 -> 0.2", "X 0.8 -> 0.7"]
    assert fake_anthropic.left == 0 and len(fake_anthropic.requests) == 8
    for e in exps[1:]:  # two requests each; the failed one cost nothing
        assert e.usage["requests"] == 2 and e.usage["input_tokens"] == 120 and e.usage["cost_usd"] > 0
    warnings = " | ".join(messages(events, "warning"))
    for why in ("HTTP 429", "HTTP 500", "no answer within 1.5 s", "connection failed"):
        assert f"Claude API: {why}" in warnings
    assert events[-1]["state"] == "stopped"
    check_ledger(ws, 5)
    check_no_key(ws, events)


def test_answers_that_are_not_the_api_are_retried_as_an_outage(tmp_path, fake_anthropic):
    """A proxy's HTML page with status 200 and an empty body where the Messages API should answer: each is
    retried, with a warning saying what came, and the proposal after them is one experiment."""
    ws = setup(tmp_path, fake_anthropic, IN_ORDER)
    fake_anthropic.script(html_page(), raw("", content_type="application/json"), tool_call(edit("X", "1.0", "0.9")))
    engine, events = run_loop(ws, 2)
    assert statuses(engine) == [(1, "keep"), (2, "keep")]
    assert engine.ledger.experiments()[1].usage["requests"] == 3
    warnings = " | ".join(messages(events, "warning"))
    assert "Claude API: an answer that is not the Messages API's: an HTML page" in warnings
    assert "not the Messages API's: an empty body" in warnings
    assert fake_anthropic.left == 0 and events[-1]["state"] == "stopped"
    check_ledger(ws, 2)
    check_no_key(ws, events)


def test_always_html_stops_the_loop_in_plain_words(tmp_path, fake_anthropic, capsys, caplog):
    """A proxy that answers every request with its HTML page: retried until max_wait_s, then the loop is
    errored with a reason naming the base URL to check; no traceback, and no experiment for it."""
    ws = setup(tmp_path, fake_anthropic, IN_ORDER + "[agent.anthropic]\nmax_wait_s = 0.3\n")
    fake_anthropic.script(tool_call(edit("X", "1.0", "0.9")), *[html_page() for _ in range(40)])
    engine, events = run_loop(ws, 5)
    assert statuses(engine) == [(1, "keep"), (2, "keep")]
    assert engine.state == "errored" and events[-1]["state"] == "errored"
    reason = events[-1]["reason"]
    assert reason.startswith(f"the API at {fake_anthropic.base_url} answered something that is not the Messages API")
    assert "(an HTML page, beginning '<!DOCTYPE html>" in reason and "check ANTHROPIC_BASE_URL" in reason
    assert 0 < fake_anthropic.left < 40
    assert "Traceback" not in capsys.readouterr().err and not [r for r in caplog.records if r.exc_info]
    check_ledger(ws, 2)
    check_no_key(ws, events)


def test_unknown_model_stops_the_loop_at_once(tmp_path, fake_anthropic):
    """A 404 (the model id is wrong) is not retried: the loop is errored with what to check."""
    ws = setup(tmp_path, fake_anthropic, IN_ORDER + '[agent.anthropic]\nmodel = "claude-nope-9"\n')
    fake_anthropic.script(http_error(404, "model: claude-nope-9"), tool_call(edit("X", "1.0", "0.9")))
    engine, events = run_loop(ws, 3)
    assert statuses(engine) == [(1, "keep")] and engine.state == "errored"
    assert len(fake_anthropic.requests) == 1 and fake_anthropic.requests[0]["body"]["model"] == "claude-nope-9"
    reason = events[-1]["reason"]
    assert "HTTP 404" in reason and "check the model, 'claude-nope-9'" in reason and "claude-nope-9" in reason
    check_ledger(ws, 1)


# --------------------------------------------------------------------------------------------------
# (c) malformed answers, (d) edits that do not apply


def test_malformed_tool_call_is_retried_once_and_twice_is_a_crash(tmp_path, fake_anthropic):
    """A tool call without edits, then a valid one: a normal experiment. A text answer, then a tool call
    editing a protected file: the experiment is a crash ("invalid proposal") that trains nothing, and the
    loop goes on; the next prompt tells the model why it crashed."""
    ws = setup(tmp_path, fake_anthropic, IN_ORDER)
    fake_anthropic.script(
        tool_call({"description": "no edits", "hypothesis": "h"}),
        tool_call(edit("X", "1.0", "0.5")),
        text_reply(),
        tool_call({**edit("X", "1.0", "0.5"), "edits": [{"path": "prepare.py", "search": "# the", "replace": "# my"}]}),
        tool_call(edit("X", "0.5", "0.25")),
    )
    engine, events = run_loop(ws, 4)
    assert statuses(engine) == [(1, "keep"), (2, "keep"), (3, "crash"), (4, "keep")]
    fixed, invalid, after = engine.ledger.experiments()[1:]
    assert fixed.description == "X 1.0 -> 0.5" and fixed.meta["corrected"] is True
    assert fixed.usage["requests"] == 2 and fixed.usage["input_tokens"] == 240  # both answers are paid for
    assert invalid.description == "invalid proposal" and invalid.agent == "anthropic"
    assert "invalid" in invalid.decision_reason and "'prepare.py' is not editable" in invalid.decision_reason
    assert invalid.usage["requests"] == 2 and invalid.usage["cost_usd"] > 0
    assert not (ws / ".nightlab/runs/main/3").exists()  # no training spent on it
    assert after.status == "keep" and after.metric == 0.25
    # the bad tool call went back in the same conversation as an error tool_result
    second = fake_anthropic.requests[1]["body"]["messages"]
    assert [m["role"] for m in second] == ["user", "assistant", "user"]
    assert (
        second[2]["content"][0]["type"] == "tool_result"
        and "missing required key(s): edits" in second[2]["content"][0]["content"]
    )
    # the crash is in the next prompt, with its reason
    crash_line = next(line for line in user_text(fake_anthropic.requests[4]).splitlines() if line.startswith("#3 "))
    assert crash_line.startswith("#3 [crash] invalid proposal; why: the agent's proposal was invalid")
    assert len(crash_line) < 200
    assert fake_anthropic.left == 0 and events[-1]["state"] == "stopped"
    check_ledger(ws, 4)
    check_no_key(ws, events)


def test_search_that_does_not_apply_is_fixed_in_the_agents_conversation(tmp_path, fake_anthropic):
    """The agent applies the edits to the files it was shown before answering: a SEARCH that is not
    there goes back to the model at once, and the corrected answer becomes the experiment."""
    ws = setup(tmp_path, fake_anthropic, IN_ORDER)
    fake_anthropic.script(tool_call(edit("X", "9.9", "0.5", "X 1.0 -> 0.5")), tool_call(edit("X", "1.0", "0.5")))
    engine, events = run_loop(ws, 2)
    assert statuses(engine) == [(1, "keep"), (2, "keep")]
    exp = engine.ledger.experiments()[1]
    assert exp.meta["corrected"] is True and exp.metric == 0.5 and exp.usage["requests"] == 2
    (result,) = fake_anthropic.requests[1]["body"]["messages"][2]["content"]
    assert result["is_error"] is True and "SEARCH text not found" in result["content"]
    assert "copy SEARCH exactly" in result["content"]
    check_ledger(ws, 2)
    check_no_key(ws, events)


@pytest.mark.parametrize("retry", ["valid", "invalid"])
def test_edit_stale_after_a_keep_goes_back_through_the_engines_feedback(tmp_path, fake_anthropic, retry):
    """Two CPU slots. Slot 2 asks the agent while slot 1 trains #2, and the answer (slow) comes back
    after #2 was kept: valid against the files the model saw, its SEARCH is no longer at the head. The
    engine asks once more with ctx.feedback (the agent accepts feedback); that answer is experiment 3.
    Timing: the slow answer waits 3 s; the stand-in's run of #2 takes a few tenths of a second."""
    ws = setup(tmp_path, fake_anthropic, IN_ORDER + '[run]\nslots = ["cpu", "cpu"]\n')
    stale = edit("X", "1.0", "0.7", "stale: written against the baseline")
    answer = [tool_call(edit("X", "0.5", "0.25"))] if retry == "valid" else [text_reply(), text_reply()]
    fake_anthropic.script(tool_call(edit("X", "1.0", "0.5")), slow(3.0, tool_call(stale)), *answer)
    engine, events = run_loop(ws, 3)
    assert fake_anthropic.left == 0
    asked, feedback = fake_anthropic.requests[1], fake_anthropic.requests[2]
    assert "\nX = 1.0 " in user_text(asked) and "- X 1.0 -> 0.5" in user_text(asked)  # #2 in flight
    text = user_text(feedback)
    assert text.startswith("IMPORTANT. Your previous proposal could not be applied: edit 1 of 1 on train.py")
    assert "The SEARCH text that failed was:\nX = 1.0\n" in text and "\nX = 0.5 " in text
    exps = engine.ledger.experiments()
    assert all("stale" not in e.description for e in exps)
    third = exps[2]
    if retry == "valid":
        assert statuses(engine) == [(1, "keep"), (2, "keep"), (3, "keep")]
        assert third.description == "X 0.5 -> 0.25" and third.metric == 0.25
    else:
        assert third.status == "crash" and "invalid" in third.decision_reason
        assert not (ws / ".nightlab/runs/main/3").exists()
    assert third.usage["requests"] == 3 - (retry == "valid")  # the stale answer is paid for too
    check_ledger(ws, 3)
    check_no_key(ws, events)


# --------------------------------------------------------------------------------------------------
# (e) cost


def test_cost_accumulates_and_max_cost_usd_stops_the_loop(tmp_path, fake_anthropic):
    """Claude Sonnet 5.5 at $2 / $10 per million tokens: 100k in + 10k out is $0.30 a request. #2 costs
    one request, #3 two (a malformed answer first): $0.90 in all, past max_cost_usd = 0.5 -> stop."""
    ws = setup(tmp_path, fake_anthropic, "[run]\npropose_ahead = false\nmax_cost_usd = 0.5\n")
    u = {"input_tokens": 100_000, "output_tokens": 10_000}
    fake_anthropic.script(
        tool_call(edit("X", "1.0", "0.5"), usage=u),
        text_reply(usage=u),
        tool_call(edit("LR", "0.1", "0.2"), usage=u),
        tool_call(edit("X", "0.5", "0.1"), usage=u),
    )  # never asked for
    engine, events = run_loop(ws, 10)
    assert statuses(engine) == [(1, "keep"), (2, "keep"), (3, "discard")]
    base, first, second = engine.ledger.experiments()
    assert base.usage == {}
    assert first.usage["cost_usd"] == pytest.approx(0.3) and second.usage["cost_usd"] == pytest.approx(0.6)
    assert first.usage["model"] == "claude-sonnet-5-5" and "price_note" not in first.usage
    assert engine.ledger.cost_usd() == pytest.approx(0.9)
    assert fake_anthropic.left == 1 and len(fake_anthropic.requests) == 3
    said = [t for t in messages(events) if "max_cost_usd" in t]
    assert said == ["reached max_cost_usd = 0.50 (spent 0.90)"]
    assert events[-1] == {"type": "state", "state": "stopped", "reason": "limit reached"}
    check_ledger(ws, 3)
    check_no_key(ws, events)


# --------------------------------------------------------------------------------------------------
# (f) the key


def test_the_key_reaches_no_file_and_no_training_process(tmp_path, fake_anthropic, monkeypatch):
    """The loop runs with ANTHROPIC_API_KEY set: the training process does not get it (the stand-in dumps
    its environment), no file under .nightlab/ holds it, and a refusal that echoes the key stops the loop
    with a message that does not."""
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # allow-listed: the stand-in writes env.json here
    ws = setup(tmp_path, fake_anthropic, IN_ORDER)
    fake_anthropic.script(
        http_error(429, f"slow down, {KEY}"),
        tool_call(edit("MODE", '"ok"', '"envdump"')),
        http_error(401, f"invalid x-api-key: {KEY}"),
    )
    engine, events = run_loop(ws, 5)
    assert statuses(engine) == [(1, "keep"), (2, "discard")]  # envdump reports X = 1.0: equal
    assert engine.state == "errored"
    reason = events[-1]["reason"]
    assert "HTTP 401" in reason and "check ANTHROPIC_API_KEY" in reason and KEY not in reason
    env = json.loads((tmp_path / "env.json").read_text())
    assert env["NIGHTLAB_SEED"] == "0"
    assert KEY not in json.dumps(env)
    named = [k for k in env if any(w in k.upper() for w in ("KEY", "TOKEN", "SECRET"))]
    assert named in ([], ["NIGHTLAB_BUDGET_TOKENS"])
    assert (ws / ".nightlab/runs/main/2/run.log").exists()  # the walk below reads the run's log and events
    check_ledger(ws, 2)
    check_no_key(ws, events)
    check_key_sent(fake_anthropic)
