"""The whole loop on the real default experiment: `nightlab init`, then `nightlab run` with the offline
agent and a tiny token budget on the CPU (real torch training, real git, real subprocesses)."""

import subprocess
import sys

import pytest

from nightlab.server.record.ledger import Ledger

pytestmark = pytest.mark.slow


def test_offline_loop_on_the_default_experiment(tmp_path):
    ws = tmp_path / "ws"
    nightlab = [sys.executable, "-m", "nightlab.server.cli"]
    assert subprocess.run([*nightlab, "init", str(ws), "--profile", "cpu"], capture_output=True).returncode == 0
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ws, capture_output=True, text=True).stdout
    proc = subprocess.run(
        [*nightlab, "run", "--budget-tokens", "8192", "--max-experiments", "3", "--plain"],
        cwd=ws,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    exps = Ledger(ws / ".nightlab" / "main").experiments()
    assert len(exps) == 3
    assert exps[0].is_baseline and exps[0].status == "keep" and 3.0 < exps[0].metric < 8.5
    for e in exps[1:]:
        assert e.status in ("keep", "discard", "crash") and e.agent == "offline"
        assert e.diff.count("\n-") >= 1 and e.meta["knob"]["name"].isupper()
        assert e.decision_reason
    assert exps[0].timings["training_s"] >= 0 and exps[0].metrics["num_steps"] == 2
    # results.tsv, experiments.jsonl, progress.png; the summary block of the best experiment is printed
    assert (ws / ".nightlab/main/progress.png").stat().st_size > 5000
    assert "\n---\nval_bpb:" in proc.stdout
    tsv = (ws / ".nightlab/main/results.tsv").read_text().splitlines()
    assert tsv[0] == "commit\tval_bpb\tmemory_gb\tstatus\tdescription" and len(tsv) == 4
    # the user's tree is untouched
    status = subprocess.run(["git", "status", "--porcelain"], cwd=ws, capture_output=True, text=True).stdout
    assert (
        status == ""
        and subprocess.run(["git", "rev-parse", "HEAD"], cwd=ws, capture_output=True, text=True).stdout == head
    )
