"""The protocol: the TypeScript mirror and METHODS.md are exactly what the generator renders from the Python
definitions (and a change on one side only is caught), payloads round-trip through their wire form, the
converters read the engine's real records, and importing protocol/ loads nothing of the server (what its source
imports is checked with the other layers in test_layers.py)."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import typing
from dataclasses import MISSING, asdict, field, fields, is_dataclass, make_dataclass
from pathlib import Path

import pytest

from nightlab.protocol import control as ctl
from nightlab.protocol import convert, events
from nightlab.protocol import generate_ts as gen
from nightlab.protocol import methods as m
from nightlab.protocol import types as t
from nightlab.protocol.examples import EXAMPLES
from nightlab.protocol.wire import WireError, camel, hints

ROOT = Path(__file__).resolve().parents[1]
PROTOCOL = ROOT / "protocol"


# ---------------------------------------------------------------------------- the checked-in files


def test_checked_in_ts_is_the_generators_output():
    assert gen.TS_FILE == PROTOCOL / "nightlab-protocol.ts"
    assert gen.diff(gen.TS_FILE, gen.render_ts()) == "", "run: python -m nightlab.protocol.generate_ts"


def test_checked_in_methods_md_is_the_generators_output():
    assert gen.diff(gen.MD_FILE, gen.render_md()) == "", "run: python -m nightlab.protocol.generate_ts"


def test_check_command_passes_on_the_checked_in_files():
    proc = subprocess.run(
        [sys.executable, "-m", "nightlab.protocol.generate_ts", "--check"], capture_output=True, text=True, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_output_is_deterministic_and_has_the_header():
    first, second = gen.render_ts(), gen.render_ts()
    assert first == second and first.splitlines()[0] == f"// {gen.HEADER}"
    assert gen.render_md().splitlines()[0] == f"<!-- {gen.HEADER} -->"


# ---------------------------------------------------------------------------- drift is caught


def _with_extra_field(cls: type, name: str, tp) -> type:
    """A copy of a payload class, same name, one field more: a field added on the Python side only."""
    return make_dataclass(cls.__name__, [(name, tp, field(default=None))], bases=(cls,))


def test_a_field_added_in_python_only_fails_the_check():
    changed = _with_extra_field(t.ExperimentPayload, "gpu_name", typing.Optional[str])  # noqa: UP045 (what a field says)
    payloads = [changed if c is t.ExperimentPayload else c for c in t.PAYLOADS]
    delta = gen.diff(gen.TS_FILE, gen.render_ts(payloads=payloads))
    assert "+  gpuName?: string | null;" in delta.splitlines()
    assert gen.diff(gen.MD_FILE, gen.render_md(payloads=payloads)) != ""  # ExperimentPayload is a shared type


def test_a_field_removed_in_python_only_fails_the_check():
    spec = [
        (f.name, hints(t.ProgressPayload)[f.name], field(default=f.default))
        if f.default is not MISSING
        else (f.name, hints(t.ProgressPayload)[f.name])
        for f in fields(t.ProgressPayload)
        if f.name != "mfu"
    ]
    trimmed = make_dataclass("ProgressPayload", spec, bases=(t.Wire,))
    payloads = [trimmed if c is t.ProgressPayload else c for c in t.PAYLOADS]
    assert any(
        line.startswith("-  mfu?:") for line in gen.diff(gen.TS_FILE, gen.render_ts(payloads=payloads)).splitlines()
    )


def test_a_method_added_in_python_only_fails_the_check():
    extra = m.Method(
        "nightlab/experimentLog", "request", t.ExperimentArgs, t.ExperimentCommandResult, "Log", "The log."
    )
    delta = gen.diff(gen.TS_FILE, gen.render_ts(registry=[*m.REGISTRY, extra]))
    assert '+  experimentLog: "nightlab/experimentLog",' in delta.splitlines()


@pytest.mark.parametrize(
    "edit",
    [
        lambda s: s.replace("  tokPerS?: number | null;\n", "  tokPerS?: number | null;\n  gpuName?: string | null;\n"),
        lambda s: s.replace("  mfu?: number | null;\n", ""),
        lambda s: s.replace('"nightlab.loop.start"', '"nightlab.loop.begin"'),
    ],
)
def test_a_ts_file_edited_by_hand_fails_the_check(tmp_path, edit, monkeypatch, capsys):
    edited = tmp_path / "nightlab-protocol.ts"
    text = gen.TS_FILE.read_text(encoding="utf-8")
    assert edit(text) != text
    edited.write_text(edit(text), encoding="utf-8")
    assert gen.diff(edited, gen.render_ts()) != ""
    monkeypatch.setattr(gen, "TS_FILE", edited)
    monkeypatch.setattr(gen, "MD_FILE", tmp_path / "METHODS.md")
    (tmp_path / "METHODS.md").write_text(gen.render_md(), encoding="utf-8")
    assert gen.main(["--check"]) == 1
    assert "nightlab-protocol.ts (generated)" in capsys.readouterr().out
    assert edited.read_text(encoding="utf-8") == edit(text)  # --check writes nothing
    assert gen.main([]) == 0 and gen.main(["--check"]) == 0  # regenerating repairs it


def test_a_payload_missing_from_the_list_is_refused():
    with pytest.raises(ValueError, match="BestPayload"):
        gen.render_ts(payloads=[c for c in t.PAYLOADS if c is not t.BestPayload])


# ---------------------------------------------------------------------------- TypeScript types

TS_TYPES = [
    (str, "string"),
    (int, "number"),
    (float, "number"),
    (bool, "boolean"),
    (list[int], "number[]"),
    (list[t.FileDiff], "FileDiff[]"),
    (dict[str, float], "Record<string, number>"),
    (typing.Literal["a", "b"], '"a" | "b"'),
    (t.Verdict, "Verdict"),
    (list[t.ExperimentStatus], "ExperimentStatus[]"),
    (list[typing.Literal["a", "b"]], '("a" | "b")[]'),
    (typing.Any, "unknown"),
]


@pytest.mark.parametrize("tp,ts", TS_TYPES)
def test_ts_type(tp, ts):
    assert gen.ts_type(tp, t.ALIASES) == ts


def test_ts_names_and_keys():
    text = gen.render_ts()
    for meth in m.REGISTRY:
        assert f"  {meth.key}: {json.dumps(meth.name)}," in text
    assert len({x.key for x in m.REGISTRY}) == len(m.REGISTRY) == len(m.BY_NAME)
    assert {x.name for x in m.COMMANDS} == {
        m.LOOP_START,
        m.LOOP_PAUSE,
        m.LOOP_RESUME,
        m.LOOP_STOP,
        m.LOOP_LINEAGE,
        m.STATUS,
        m.EXPERIMENT_ACCEPT,
        m.EXPERIMENT_REJECT,
        m.EXPERIMENT_RERUN,
        m.EXPERIMENT_SHOW_DIFF,
        m.BASELINE_MEASURE,
        m.EXPERIMENT_APPLY_BEST,
    }
    assert all(x.name.startswith("nightlab/") for x in m.NOTIFICATIONS + m.REQUESTS)
    assert all(re.fullmatch(r"nightlab(\.[a-z][A-Za-z]*)+", x.name) for x in m.COMMANDS)
    assert all(x.result is None for x in m.NOTIFICATIONS) and all(x.result for x in m.REQUESTS + m.COMMANDS)
    assert '"nightlab.loop.start": { args: [LoopStartOverrides?]; result: LoopCommandResult };' in text


def test_every_payload_is_public():
    assert {c.__name__ for c in t.PAYLOADS} | set(t.ALIASES) <= set(t.__all__)


def test_loop_states_are_the_engines():
    assert typing.get_args(t.LoopState) == events.STATES


# ---------------------------------------------------------------------------- METHODS.md


def test_methods_md_has_one_section_per_registered_method_and_no_other():
    text, control_part = gen.MD_FILE.read_text(encoding="utf-8").split("\n# The loop's control endpoint\n")
    named = re.findall(r"^\*\*(?:Method|Command):\*\* `([^`]+)`", text, flags=re.M)
    assert sorted(named) == sorted(m.BY_NAME) and len(named) == len(set(named))
    sections = re.findall(r"^## (.+)$", text, flags=re.M)
    assert sections == [x.title for x in m.REGISTRY] + ["Shared types"]
    sections = re.findall(r"^## (.+)$", control_part, flags=re.M)
    assert sections == [f"`{kind}`" for kind in ctl.MESSAGES] + ["Control types"]


def test_the_control_part_shows_each_message_with_an_example_line_that_decodes():
    text = gen.MD_FILE.read_text(encoding="utf-8").split("\n# The loop's control endpoint\n")[1]
    lines = re.findall(r"^Example line:\n\n```json\n(.+)\n```$", text, flags=re.M)
    assert [ctl.decode(line) for line in lines] == [ctl.EXAMPLES[kind] for kind in ctl.MESSAGES]
    ts = gen.TS_FILE.read_text(encoding="utf-8")
    for kind, cls in ctl.MESSAGES.items():
        assert f"export interface {cls.__name__} {{" in ts and f'  "{kind}": {cls.__name__};' in ts


def test_a_field_added_to_a_control_message_in_python_only_fails_the_check(monkeypatch):
    changed = _with_extra_field(ctl.ControlGoodbye, "retry_after_s", typing.Optional[float])  # noqa: UP045
    monkeypatch.setattr(ctl, "MESSAGES", {**ctl.MESSAGES, "goodbye": changed})
    monkeypatch.setattr(ctl, "PAYLOADS", tuple(changed if x is ctl.ControlGoodbye else x for x in ctl.PAYLOADS))
    assert "+  retryAfterS?: number | null;" in gen.diff(gen.TS_FILE, gen.render_ts()).splitlines()
    assert "retryAfterS" in gen.diff(gen.MD_FILE, gen.render_md())


def test_every_method_has_an_example_of_its_own_types():
    assert set(EXAMPLES) == set(m.BY_NAME)
    for name, (params, result) in EXAMPLES.items():
        meth = m.BY_NAME[name]
        assert (
            type(params) is meth.params
            if meth.params and not meth.params_optional
            else params is None or type(params) is meth.params
        ), name
        assert type(result) is meth.result if meth.result else result is None, name


# ---------------------------------------------------------------------------- wire form


def _instances(obj):
    if is_dataclass(obj):
        yield obj
        for f in fields(obj):
            yield from _instances(getattr(obj, f.name))
    elif isinstance(obj, (list, tuple)):
        for item in obj:
            yield from _instances(item)


EXAMPLE_OBJECTS = [o for pair in EXAMPLES.values() for o in _instances(pair)]


def test_the_examples_cover_every_payload():
    assert {type(o) for o in EXAMPLE_OBJECTS} == set(t.PAYLOADS)


@pytest.mark.parametrize("obj", EXAMPLE_OBJECTS, ids=lambda o: type(o).__name__)
def test_round_trip(obj):
    wire = obj.to_wire()
    assert json.loads(json.dumps(wire, allow_nan=False)) == wire
    assert set(wire) == {camel(f.name) for f in fields(obj)}
    assert all(re.fullmatch(r"[a-z][A-Za-z0-9]*", k) for k in wire)
    assert type(obj).from_wire(wire) == obj
    assert type(obj).from_wire({**wire, "fromANewerServer": 1}) == obj  # unknown keys are ignored


@pytest.mark.parametrize("cls", t.PAYLOADS, ids=lambda c: c.__name__)
def test_optional_keys_may_be_left_out(cls):
    obj = next(o for o in EXAMPLE_OBJECTS if type(o) is cls)
    wire = obj.to_wire()
    required = {camel(f.name) for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING}
    trimmed = cls.from_wire({k: v for k, v in wire.items() if k in required})
    assert {k: v for k, v in trimmed.to_wire().items() if k in required} == {k: wire[k] for k in required}


BAD = [
    (t.ExperimentArgs, {}, "missing 'number'"),
    (t.ExperimentArgs, {"number": "7"}, r"ExperimentArgs\.number: expected int"),
    (t.ExperimentArgs, {"number": True}, "expected int"),
    (t.ExperimentArgs, [7], "expected an object"),
    (t.AcceptArgs, {"number": 7, "hunks": [0, "1"]}, r"AcceptArgs\.hunks\[1\]: expected int"),
    (t.ExperimentsParams, {"status": "kept"}, "'kept' is not one of"),
    (t.LoopStartOverrides, {"budgetSeconds": "8"}, "expected float"),
    (t.LoopStatePayload, {"state": "idle", "best": {"number": 1}}, r"LoopStatePayload\.best: missing 'metric'"),
]


@pytest.mark.parametrize("cls,data,error", BAD)
def test_from_wire_refuses_what_does_not_fit(cls, data, error):
    with pytest.raises(WireError, match=error):
        cls.from_wire(data)


def test_from_wire_reads_ints_as_floats_and_nulls_as_none():
    o = t.LoopStartOverrides.from_wire({"agent": "offline", "budgetSeconds": 8, "maxExperiments": 3, "tag": None})
    assert o == t.LoopStartOverrides(agent="offline", budget_seconds=8.0, max_experiments=3)
    assert isinstance(o.budget_seconds, float)


def test_loop_start_overrides_are_settings_overrides(tmp_path):
    from nightlab.server.core.settings import load_settings

    (tmp_path / "nightlab.toml").write_text("", encoding="utf-8")  # the defaults
    overrides = t.LoopStartOverrides.from_wire(EXAMPLES[m.LOOP_START][0].to_wire())
    full = t.LoopStartOverrides(
        agent="offline",
        budget_tokens=1000,
        max_experiments=3,
        tag="x",
        policy="strict",
        max_cost_usd=1.5,
        slots=["cpu", "cpu"],
        root=str(tmp_path),
    )
    assert "root" not in full.to_settings_overrides()
    assert load_settings(tmp_path, overrides.to_settings_overrides()).budget.seconds == 8
    s = load_settings(tmp_path, full.to_settings_overrides())
    assert (s.budget.mode, s.budget.tokens, s.run.max_experiments, s.tag, s.run.max_cost_usd, len(s.run.slots)) == (
        "tokens",
        1000,
        3,
        "x",
        1.5,
        2,
    )
    assert t.LoopStartOverrides.from_wire({"slots": 2}).slots == 2  # "auto", a number or a list: any JSON


# ---------------------------------------------------------------------------- converters from the engine's records

DIFF = """\
diff --git a/train.py b/train.py
--- a/train.py
+++ b/train.py
@@ -1,3 +1,3 @@
 DEPTH = 8
-LR = 0.003  # peak learning rate
+LR = 0.004  # peak learning rate
 WARMUP = 10
"""


def _experiment(**kw):
    from nightlab.server.core.types import Experiment

    base = dict(
        number=7,
        tag="mar5",
        description="raise the learning rate",
        hypothesis="under-trained",
        parent_commit="41d07aa",
        commit="9c1f2e4",
        diff=DIFF,
        status="keep",
        run_status="ok",
        metric=0.981234,
        metrics={"val_bpb": 0.981234, "num_steps": 950.0},
        best_before=0.987755,
        delta=-0.006521,
        seeds=[0, 1],
        timings={"startup_s": 3.0, "training_s": 60.0, "eval_s": 4.0, "total_s": 131.4},
        memory_gb=1.2,
        agent="anthropic",
        usage={"cost_usd": 0.0123, "input_tokens": 5000},
        decision_reason="kept: 4.2 standard errors better",
        started_at="2025-03-05T23:14:02Z",
        finished_at="2025-03-05T23:16:13Z",
        slot="gpu0",
        runs=[0.98, 0.982468],
        decision={"verdict": "keep", "z": 4.19, "sigma": 0.0011, "repeats": 2},
    )
    return Experiment(**{**base, **kw})


def test_experiment_payload_from_a_ledger_record():
    from nightlab.server.changes.edits import diff_summary

    record = _experiment().to_json()
    p = convert.experiment_payload(record, diff_summary=diff_summary(record["diff"]))
    assert p == t.ExperimentPayload(
        number=7,
        lineage=1,
        tag="mar5",
        status="keep",
        description="raise the learning rate",
        hypothesis="under-trained",
        metric=0.981234,
        delta=-0.006521,
        sigma=0.0011,
        z=4.19,
        repeats=2,
        memory_gb=1.2,
        duration_s=131.4,
        agent="anthropic",
        cost_usd=0.0123,
        commit="9c1f2e4",
        parent_commit="41d07aa",
        started_at="2025-03-05T23:14:02Z",
        finished_at="2025-03-05T23:16:13Z",
        reason="kept: 4.2 standard errors better",
        slot="gpu0",
        diff_summary=diff_summary(DIFF),
    )
    assert t.ExperimentPayload.from_wire(json.loads(json.dumps(p.to_wire()))) == p
    assert convert.experiment_payload(record).diff_summary == ""  # the server's summary, or none
    finished = convert.experiment_finished(record, new_best=True, root="/home/ada/lab")
    assert (finished.verdict, finished.reason, finished.new_best, finished.root) == (
        "keep",
        p.reason,
        True,
        "/home/ada/lab",
    )
    reviewed = convert.experiment_payload(_experiment(review="rejected", slot="", runs=[], decision={}).to_json())
    assert (reviewed.review, reviewed.repeats, reviewed.sigma) == ("rejected", 1, None)


def test_experiment_payload_of_a_running_a_baseline_and_a_crashed_record():
    running = convert.experiment_started(
        _experiment(
            status="running",
            run_status="",
            metric=None,
            delta=None,
            diff="",
            seeds=[0],
            timings={},
            memory_gb=0.0,
            usage={},
            decision_reason="",
            finished_at="",
            slot="cpu0",
            rerun_of=3,
            runs=[],
            decision={},
        ).to_json()
    ).experiment
    assert (
        running.status,
        running.metric,
        running.repeats,
        running.memory_gb,
        running.duration_s,
        running.finished_at,
        running.cost_usd,
        running.rerun_of,
    ) == ("running", None, None, None, None, None, None, 3)
    baseline = convert.experiment_payload(
        _experiment(kind="baseline", runs=[1.0, 1.01, 0.99], slot="", decision={}).to_json()
    )
    assert (baseline.baseline, baseline.repeats, baseline.sigma, baseline.slot) == (True, 3, None, None)
    crash = convert.experiment_finished(
        _experiment(status="crash", metric=None, delta=float("nan"), slot="", runs=[], decision={}).to_json()
    )
    assert (crash.verdict, crash.experiment.metric, crash.experiment.delta) == ("crash", None, None)
    json.dumps(crash.to_wire(), allow_nan=False)


def test_progress_payload_from_a_progress_event():
    from nightlab.server.core.types import Progress

    event = {
        "type": events.PROGRESS,
        "number": 8,
        "progress": asdict(
            Progress(step=412, elapsed_s=96.3, loss=3.214, tok_per_s=184000.0, mfu=38.5, lr=0.004, fraction=0.321)
        ),
        "stage": "repeat-1",
    }
    p = convert.progress_payload(event["number"], event["progress"], event["stage"], root="/home/ada/lab")
    assert p == t.ProgressPayload(
        number=8,
        step=412,
        elapsed_s=96.3,
        loss=3.214,
        tok_per_s=184000.0,
        mfu=38.5,
        lr=0.004,
        fraction=0.321,
        stage="repeat-1",
        root="/home/ada/lab",
    )
    sparse = convert.progress_payload(8, asdict(Progress(step=1, elapsed_s=0.5, loss=math.inf)), "")
    assert (sparse.loss, sparse.mfu, sparse.stage) == (None, None, "run")


@pytest.mark.parametrize(
    "mode,seconds,tokens,text",
    [("time", 60, 0, "60 s"), ("time", 7.5, 0, "7.5 s"), ("tokens", 60, 1_000_000, "1,000,000 tokens")],
)
def test_budget_text(mode, seconds, tokens, text):
    assert convert.budget_text(mode, seconds, tokens) == text


# ---------------------------------------------------------------------------- boundaries


def test_importing_the_protocol_loads_no_server_module():
    code = (
        "import sys, nightlab.protocol.generate_ts, nightlab.protocol.examples; "
        "print(sorted(m for m in sys.modules if m.startswith(('nightlab.server', 'nightlab.trainer', 'pygls', "
        "'lsprotocol'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
