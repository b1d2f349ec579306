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
