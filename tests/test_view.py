"""The live view folds engine events into what it shows: running experiments, best, cost."""

from rich.console import Console

from nightlab.server.cli.view import LiveView
from nightlab.server.core.types import Experiment


def render(view) -> str:
    console = Console(width=140, record=True)
    console.print(view)
    return console.export_text()


def test_live_view_follows_two_slots_and_the_cost():
    view = LiveView("val_bpb", 60, [])
    a = Experiment(number=2, tag="main", description="LR up", slot="cpu0")
    b = Experiment(number=3, tag="main", description="DEPTH 5", slot="cpu1")
    for e in (a, b):
        view.on_event({"type": "experimentStarted", "experiment": e.to_json()})
    view.on_event({"type": "progress", "number": 3, "progress": {"step": 7, "fraction": 0.5, "loss": 2.5}})
    text = render(view)
    assert "#2 LR up" in text and "#3 DEPTH 5" in text and "step 7" in text and "running on cpu1" in text
    done = Experiment(number=2, tag="main", description="LR up", status="keep", metric=2.1, usage={"cost_usd": 0.25})
    view.on_event({"type": "experimentFinished", "experiment": done.to_json()})
    text = render(view)
    assert "best val_bpb: 2.100000 (#2 LR up)" in text and "agent cost $0.25" in text
    assert "running on cpu0" not in text


def test_live_view_best_follows_the_metrics_direction():
    """Bug: the live view's best was the lowest metric even when higher is better."""
    kept = [
        Experiment(number=n, tag="main", description=f"try {n}", status="keep", metric=m)
        for n, m in ((1, 0.5), (2, 0.9), (3, 0.7))
    ]
    assert LiveView("accuracy", 60, kept, direction="higher").best().number == 2
    assert "best accuracy: 0.900000 (#2 try 2)" in render(LiveView("accuracy", 60, kept, direction="higher"))
    assert LiveView("val_bpb", 60, kept, direction="lower").best().number == 1
    assert LiveView("val_bpb", 60, kept).best().number == 1  # lower is better unless said otherwise


# ----------------------------------------------------------------- issue 12: the live view's defects


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def started(view, number, description, kind="change"):
    exp = Experiment(number=number, tag="main", description=description, slot="cpu0", kind=kind)
    view.on_event({"type": "experimentStarted", "experiment": exp.to_json()})


def progress(view, number, stage, fraction, step=10):
    event = {"step": step, "fraction": fraction, "loss": 2.5, "tok_per_s": 1000.0}
    view.on_event({"type": "progress", "number": number, "progress": event, "stage": stage})


def test_the_baselines_repeats_and_the_confirmation_runs_are_labelled():
    """Bug: a baseline's repeat runs and a change's confirmations were not labelled (the bar went 100 % ->
    0 % while elapsed kept counting)."""
    clock = Clock()
    view = LiveView("val_bpb", 60, [], baseline_repeats=3, clock=clock)
    started(view, 1, "baseline", kind="baseline")
    progress(view, 1, "run", 0.5)
    assert "baseline run 1 of 3" in render(view)
    clock.now += 70
    progress(view, 1, "repeat-1", 0.1)
    text = render(view)
    assert "baseline run 2 of 3" in text and "0s elapsed" in text  # the run's own clock
    progress(view, 1, "repeat-2", 0.1)
    assert "baseline run 3 of 3" in render(view)
    started(view, 2, "LR up")
    for stage, label in (("smoke", "smoke run"), ("run", "full run"), ("repeat-1", "confirmation run 1")):
        progress(view, 2, stage, 0.3)
        assert label in render(view)
    progress(view, 2, "repeat-2", 0.3)
    assert "confirmation run 2" in render(view)


def test_a_run_past_its_budget_is_evaluating():
    """Bug: no "evaluating" state: the bar sat at 100 % for the evaluation's 25 s with nothing said."""
    clock = Clock()
    view = LiveView("val_bpb", 60, [], clock=clock)
    started(view, 2, "LR up")
    progress(view, 2, "run", 0.6)
    assert "evaluating" not in render(view)
    progress(view, 2, "run", 1.0)
    clock.now += 25
    text = render(view)
    assert "evaluating val_bpb (25s)" in text and "full run · evaluating" in text
    progress(view, 2, "repeat-1", 0.05)  # the confirmation run began
    assert "evaluating" not in render(view)


def test_messages_expire():
    """Bug: an info line "#3: promising ... confirming" stayed for the rest of the session."""
    clock = Clock()
    view = LiveView("val_bpb", 60, [], clock=clock)
    view.on_event({"type": "message", "level": "info", "text": "#3: promising (z=2.1): confirming"})
    view.on_event({"type": "message", "level": "warning", "text": "the agent is slow"})
    assert "#3: promising" in render(view)
    done = Experiment(number=3, tag="main", description="x", status="keep", metric=1.0)
    view.on_event({"type": "experimentFinished", "experiment": done.to_json()})
    assert "#3: promising" not in render(view)  # the experiment it named finished
    view.on_event({"type": "message", "level": "info", "text": "2 slots: cpu0, cpu1"})
    clock.now += 31
    text = render(view)
    assert "2 slots" not in text and "the agent is slow" in text  # info lasts 30 s, a warning longer
    clock.now += 300
    assert "the agent is slow" not in render(view)


def test_the_stop_reason_is_printed_in_full_after_the_live_view(tmp_path, monkeypatch):
    """Bug: the reason the loop stopped was cut at the terminal's width ("...crashed: exit c") in the live
    view, and not printed again once the view ended."""
    import io
    import re

    from typer.testing import CliRunner

    from nightlab.server.cli import commands
    from support.workspace import STAND_IN, make_workspace

    ws = make_workspace(tmp_path, STAND_IN.replace('MODE = "ok"', 'MODE = "fail"'))
    out = io.StringIO()
    monkeypatch.setattr(commands, "console", Console(file=out, force_terminal=True, width=40, soft_wrap=True))
    result = CliRunner().invoke(commands.app, ["run", "--workspace", str(ws), "--max-experiments", "2"])
    assert result.exit_code == 1, out.getvalue()
    lines = [re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", line) for line in out.getvalue().splitlines()]
    ending = [line for line in lines if line.startswith("loop errored: ")]
    assert ending and "from your new commit (log: " in ending[-1] and ending[-1].endswith("run.log)"), lines


def test_the_live_views_state_line_wraps_a_long_reason():
    view = LiveView("val_bpb", 60, [])
    reason = "the baseline crashed: exit code 1; fix it, then run again (log: /a/long/path/run.log)"
    view.on_event({"type": "state", "state": "errored", "reason": reason})
    console = Console(width=40, record=True)
    console.print(view)
    assert reason in " ".join(line.strip() for line in console.export_text().splitlines())
    assert view.ending() == f"loop errored: {reason}"
