"""Resume after a stop or a kill -9: what the last loop left running is recorded as interrupted, its
orphaned training is killed, and every interrupted change is queued to run again under a new number.
Must not import: pygls, rich, typer, an agent module.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from nightlab.server.core.types import Experiment, ExperimentStatus, Proposal, RunStatus, utc_now
from nightlab.server.record.ledger import Ledger
from nightlab.server.record.store import Store
from nightlab.server.run.processes import kill_orphan


def interrupted(exp: Experiment, why: str) -> Experiment:
    """`exp`'s final record as interrupted (it runs again under a new number), with the reason."""
    return replace(
        exp,
        status=ExperimentStatus.INTERRUPTED,
        run_status=RunStatus.INTERRUPTED,
        finished_at=utc_now(),
        decision_reason=why,
    )


def recover(
    ledger: Ledger,
    store: Store,
    runs_dir: Path,
    editable: list[str],
    say: Callable[[str], None],
    finished: Callable[[Experiment], None],
) -> list[Proposal]:
    """Finish every record left running (and put the branch back if its verdict was half written),
    then return the re-runs of the interrupted experiments that have none yet, oldest first."""
    ledger.repair()
    for exp in ledger.unfinished():
        if kill_orphan(runs_dir / str(exp.number), store.root / ".nightlab"):
            say(f"killed the training of experiment {exp.number} left running by a dead loop")
        final = interrupted(exp, "the engine stopped during this run; it is run again")
        sha = store.ref_for(exp.number)  # the amended commit, when the verdict was half written
        if sha:
            final.commit = sha
        ledger.finalize(final)
        if sha and store.head() == sha and exp.parent_commit:
            store.discard(exp.number, sha, exp.parent_commit)
        finished(final)
    store.reset_worktree()
    done = {e.rerun_of for e in ledger.experiments()}
    out = []
    for exp in ledger.current():  # an earlier lineage's ran on code the user has moved on from
        if exp.status == ExperimentStatus.INTERRUPTED and exp.number not in done and exp.commit:
            out.append(rerun(exp, {p: store.read_file(p, exp.commit) for p in editable}))
            say(f"experiment {exp.number} was interrupted; running it again")
    return out


def rerun(exp: Experiment, files: dict[str, str]) -> Proposal:
    """The proposal that runs `exp`'s files again (a new number; the baseline stays a baseline)."""
    return Proposal(
        description=exp.description,
        hypothesis=exp.hypothesis,
        agent=exp.agent,
        edits=[],
        meta=dict(exp.meta),
        kind=exp.kind,
        rerun_of=exp.number,
        files=files,
    )
