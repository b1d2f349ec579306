"""Review truth: what the person said about an experiment (its review and when, in the ledger) beside what
their file holds now (`inFile`, computed from the file or the open buffer), the signed z in what the editor
shows, and Accept leaving out (and naming) what meets the user's own edits.

The in-file computation and the labels as tables first (no server); then the real language server over
stdio (pytest-lsp) on a real loop's ledger: #2 keeps X 1.0 -> 0.8, #3 is a discard (X 0.8 -> 0.9), #4
keeps X 0.8 -> 0.6 and num_steps 1 -> 2, trained on top of #2."""

import random
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import pytest
import pytest_lsp
from lsprotocol import types
from pytest_lsp import ClientServerConfig, LanguageClient

from nightlab.server.changes.hunks import plan
from nightlab.server.core.types import Experiment, ExperimentKind
from nightlab.server.editor import annotate as an
from nightlab.server.editor.review import InFileIndex
from support.agents import run_scripted
from support.lsp import apply_text_edits, record_edits, standin_workspace, start_session
from support.workspace import CRASHY, best_proposal, git, knob

# --------------------------------------------------------------------------------------------------
# in file, as a table: commits c0 -> c1 (one hunk) -> c2 (two more, far apart)

C0 = "import torch\nLR = 0.01\nDEPTH = 4\n" + "".join(f"# line {i}\n" for i in range(12)) + "STEPS = 100\n"
C1 = C0.replace("LR = 0.01", "LR = 0.02")
C2 = C1.replace("DEPTH = 4", "DEPTH = 6").replace("STEPS = 100", "STEPS = 200")
TEXTS = {"c0": C0, "c1": C1, "c2": C2}


def change(number, parent, commit, **kw) -> Experiment:
    return Experiment(number=number, tag="t", description=f"#{number}", parent_commit=parent, commit=commit, **kw)


EXPS = [
    change(1, "", "c0", kind=ExperimentKind.BASELINE),
    change(2, "c0", "c1", status="keep"),
    change(3, "c1", "c2", status="discard"),
    change(4, "c1", "", status="crash"),  # no commit: nothing to say
    change(5, "c1", "c1", status="discard"),  # no change to the file
]


def reader(texts: dict[str, str]):
    return lambda: lambda rel, commit: texts.get(commit) if rel == "train.py" else None


IN_FILE = {
    "the parent of everything": (C0, {1: None, 2: "none", 3: "none", 4: None, 5: None}),
    "#2 taken": (C1, {2: "all", 3: "none"}),
    "#2 and #3 taken": (C2, {2: "all", 3: "all"}),
    "one of #3's two hunks taken": (C1.replace("DEPTH = 4", "DEPTH = 6"), {2: "all", 3: "some"}),
    "whitespace aside": (C2.replace("LR = 0.02", "LR=0.02").replace("DEPTH = 6", "DEPTH =  6"), {2: "all", 3: "all"}),
    "moved by lines the user added": ("# mine\n# mine\n" + C2, {2: "all", 3: "all"}),
    "#2 changed again by the user": (C2.replace("LR = 0.02", "LR = 0.5"), {2: "none", 3: "all"}),
}


@pytest.mark.parametrize("name", IN_FILE)
def test_in_file(name):
    buffer, expected = IN_FILE[name]
    states = InFileIndex(reader(TEXTS)).states(EXPS, ["train.py", "prepare.py"], lambda rel: buffer)
    assert {n: states[n] for n in expected} == expected


def planned(parent: str, new: str, buffer: str) -> str | None:
    """The state straight from hunks.plan, for one change: what the index must agree with (None: no hunk,
    as for line endings alone)."""
    states = [p.state for p in plan(parent, new, buffer)]
    if not states:
        return None
    return "all" if states.count("applied") == len(states) else "some" if "applied" in states else "none"


def test_in_file_agrees_with_the_planner():
    # the index locates only the hunks whose new lines the buffer has, by the planner's rule for "applied":
    # buffers made of the versions' lines, re-indented, moved, CRLF, without or with a final newline
    rng = random.Random(13)
    versions = [
        C0,
        C1,
        C2,
        C2.replace("DEPTH = 6", "    DEPTH = 6"),
        C2.rstrip("\n"),
        C1 + "\n",
        C2.replace("\n", "\r\n"),
    ]
    texts = {f"v{i}": v for i, v in enumerate(versions)}
    pairs = [(f"v{a}", f"v{b}") for a in range(len(versions)) for b in range(len(versions)) if a != b]
    exps = [change(n, a, b) for n, (a, b) in enumerate(pairs, 1)]
    index = InFileIndex(reader(texts))
    for _ in range(40):
        lines = [line for v in rng.sample(versions, 2) for line in v.splitlines(keepends=True)]
        buffer = "".join(rng.sample(lines, rng.randint(0, len(lines))))
        states = index.states(exps, ["train.py"], lambda rel, buffer=buffer: buffer)
        for e in exps:
            assert states[e.number] == planned(texts[e.parent_commit], texts[e.commit], buffer), (e, buffer)


def test_in_file_reads_each_commit_once_and_answers_a_buffer_once():
    # 1,000 experiments, each a change of its own line on top of the last: what is read and planned is counted
    base = "".join(f"K{i} = 0\n" for i in range(1000))
    texts = {"c0": base}
    exps = []
    for i in range(1, 1001):
        texts[f"c{i}"] = texts[f"c{i - 1}"].replace(f"K{i - 1} = 0\n", f"K{i - 1} = {i}\n")
        exps.append(change(i, f"c{i - 1}", f"c{i}", status="keep" if i % 3 else "discard"))
    index = InFileIndex(reader(texts))
    asked: list[str] = []

    def buffer_text(rel):
        asked.append(rel)
        return texts["c500"]

    states = index.states(exps, ["train.py"], buffer_text)
    assert [states[n] for n in (1, 500, 501, 1000)] == ["all", "all", "none", "none"]
    assert index.reads == 1001 and asked == ["train.py"]  # each commit's text once, the buffer once a round
    # a hunk whose new line is not in the buffer is not located: the planner ran for the 500 taken only
    assert index.plans == 500
    assert index.states(exps, ["train.py"], buffer_text) == states  # the same buffer: nothing again
    assert (index.reads, index.plans) == (1001, 500)
    index.states(exps, ["train.py"], lambda rel: texts["c10"])  # another buffer: its own answers, no reads
    assert index.reads == 1001 and index.plans == 510


# --------------------------------------------------------------------------------------------------
# the verdict's z, signed as the delta, with the word; the review and the in-file state beside it


def judged(delta, z, paired=False, **kw) -> Experiment:
    decision = {"z": z, **({"paired": {"t": z, "n": 3}} if paired else {})}
    return Experiment(number=7, tag="t", description="lr up", status="keep", delta=delta, decision=decision, **kw)


@pytest.mark.parametrize(
    "e, direction, label",
    [
        (judged(-0.0031, 3.9), "lower", "-0.0031 bpb (z = -3.9, better)"),  # lower and better: the sign is delta's
        (judged(0.0031, -3.9), "lower", "+0.0031 bpb (z = +3.9, worse)"),
        (judged(0.25, 2.2), "higher", "+0.2500 bpb (z = +2.2, better)"),
        (judged(-0.25, -2.2), "higher", "-0.2500 bpb (z = -2.2, worse)"),
        (judged(-0.109, 10.6, paired=True), "lower", "-0.1090 bpb (t = -10.6, paired, better)"),
        (judged(0.0, 0.0), "lower", "+0.0000 bpb (z = +0.0, no different)"),
    ],
)
def test_the_label_shows_the_signed_z_and_says_better_or_worse(e, direction, label):
    assert an.verdict_label(e, "val_bpb", direction) == label


PARENT, NEW = "LR = 0.01\nDEPTH = 4\n", "LR = 0.02\nDEPTH = 4\n"
AT = "2026-12-01T15:40:00+00:00"


@pytest.mark.parametrize(
    "review, at, in_file, said",
    [
        ("accepted", AT, "none", f"; review: accepted ({AT}); in your file: none"),
        ("rejected", "", "all", "; review: rejected; in your file: all"),
        (None, "", "some", "; in your file: some"),
        (None, "", None, ""),
    ],
)
def test_the_hover_says_the_review_and_the_file_apart(review, at, in_file, said):
    e = judged(-0.0031, 3.9, review=review, reviewed_at=at)
    (line,) = an.line_history([an.FileTexts(e, PARENT, NEW)], "LR = 0.5", in_file={7: in_file})
    assert line == "- **#7** keep: `LR = 0.02` -0.0031 bpb (z = -3.9, better) - lr up" + said


# --------------------------------------------------------------------------------------------------
# the real server


@pytest.fixture(scope="module")
def chain_ws(tmp_path_factory) -> Path:
    ws = standin_workspace(tmp_path_factory.mktemp("truth"))
    proposals = [knob("X", "1.0", "0.8"), knob("X", "0.8", "0.9"), best_proposal()]
    with ThreadPoolExecutor(1) as pool:  # its own event loop: the tests' may be running in this thread
        engine, _ = pool.submit(run_scripted, ws, proposals, 4).result()
    assert [(e.number, e.status) for e in engine.ledger.experiments()] == [
        (1, "keep"),
        (2, "keep"),
        (3, "discard"),
        (4, "keep"),
    ]
    return ws


@pytest_lsp.fixture(config=ClientServerConfig(server_command=[sys.executable, "-m", "nightlab.server"]))
async def client(lsp_client: LanguageClient, chain_ws: Path):

    record_edits(lsp_client)

    await start_session(lsp_client, chain_ws)
    yield
    await lsp_client.shutdown_session()


def at(ws: Path, number: int) -> str:
    return git(ws, "show", f"refs/nightlab/main/{number}:train.py") + "\n"


STEPS_2 = ('print("num_steps:        1")', 'print("num_steps:        2")')  # #4's second hunk
STEPS_MINE = ('print("num_steps:        1")', 'print("num_steps:        3")')  # the user's edit of that line
X_MINE = ("X = 1.0 ", "X = 0.9 ")


def show(client: LanguageClient, text: str, version: int = 1) -> str:
    """The editor holds train.py open with `text` (the file on disk stays as it is)."""
    uri = (client.ws / "train.py").as_uri()
    if version == 1:
        item = types.TextDocumentItem(uri=uri, language_id="python", version=1, text=text)
        client.text_document_did_open(types.DidOpenTextDocumentParams(text_document=item))
    else:
        client.text_document_did_change(
            types.DidChangeTextDocumentParams(
                text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version),
                content_changes=[types.TextDocumentContentChangeWholeDocument(text=text)],
            )
        )
    return uri


async def page(client: LanguageClient, **params) -> dict[int, dict]:
    answer = await client.protocol.send_request_async("nightlab/experiments", params)
    return {e._asdict()["number"]: e._asdict() for e in answer.experiments}


async def command(client: LanguageClient, name: str, arg: dict):
    return await client.workspace_execute_command_async(types.ExecuteCommandParams(command=name, arguments=[arg]))


async def test_experiments_say_how_much_of_each_change_the_file_holds(client: LanguageClient):
    ws = client.ws
    in_file = {n: e["inFile"] for n, e in (await page(client)).items()}
    assert in_file == {1: None, 2: "none", 3: "none", 4: "none"}  # the file on disk: the user's own, untouched
    show(client, at(ws, 2))
    assert {n: e["inFile"] for n, e in (await page(client)).items()} == {1: None, 2: "all", 3: "none", 4: "none"}
    show(client, at(ws, 2).replace(*STEPS_2), version=2)  # one of #4's two hunks
    assert (await page(client))[4]["inFile"] == "some"
    show(client, at(ws, 4), version=3)
    assert {n: e["inFile"] for n, e in (await page(client)).items()} == {1: None, 2: "none", 3: "none", 4: "all"}
    assert [e["inFile"] for e in (await page(client, offset=3, limit=1)).values()] == ["all"]  # the page only


async def test_an_accepted_change_the_file_lacks_shows_both_truths(client: LanguageClient):
    ws = client.ws
    uri = show(client, at(ws, 2))
    result = await command(client, "nightlab.experiment.accept", {"number": 4})
    assert result["files"] == ["train.py"] and client.edits  # sent; this client never applies it to the buffer
    four = (await page(client))[4]
    assert four["review"] == "accepted" and four["inFile"] == "none"
    assert datetime.fromisoformat(four["reviewedAt"]).utcoffset().total_seconds() == 0  # when, in UTC
    x_line = next(i for i, line in enumerate(at(ws, 2).splitlines()) if line.startswith("X = "))
    hover = await client.text_document_hover_async(
        types.HoverParams(
            text_document=types.TextDocumentIdentifier(uri=uri), position=types.Position(line=x_line, character=0)
        )
    )
    line = next(x for x in hover.contents.value.splitlines() if x.startswith("- **#4**"))
    assert f"review: accepted ({four['reviewedAt']}); in your file: none" in line, line
    assert line.startswith("- **#4** keep: `X = 0.6"), line  # the verdict stays, the review beside it


async def test_accept_leaves_out_the_hunk_that_meets_the_users_edit(client: LanguageClient):
    ws = client.ws
    buffer = at(ws, 2).replace(*STEPS_MINE)
    uri = show(client, buffer)
    result = await command(client, "nightlab.experiment.accept", {"number": 4})
    (change,) = client.edits[0].document_changes
    assert change.text_document.uri == uri
    assert apply_text_edits(buffer, change.edits) == at(ws, 4).replace(*STEPS_2[::-1]).replace(*STEPS_MINE)
    steps_line = next(i for i, x in enumerate(buffer.splitlines(), 1) if "num_steps" in x)
    assert result["conflicts"] == [f"train.py: line {steps_line} (hunk 2), your edit at line {steps_line}"], result
    assert result["files"] == ["train.py"] and "left out (open the diff of #4): train.py: line" in result["message"]


async def test_accept_with_everything_meeting_the_users_edits_touches_nothing(client: LanguageClient):
    ws = client.ws
    show(client, CRASHY.replace(*X_MINE).replace(*STEPS_MINE))
    records = (ws / ".nightlab/main/experiments.jsonl").read_text()
    result = await command(client, "nightlab.experiment.accept", {"number": 4})
    assert client.edits == [] and result["files"] == [] and len(result["conflicts"]) == 2, result
    assert result["message"].startswith("nothing applied: every hunk of experiment #4"), result
    assert "open the diff of #4" in result["message"]
    assert (ws / ".nightlab/main/experiments.jsonl").read_text() == records  # nothing taken: no review recorded


async def test_accepting_one_hunk_of_a_chain_member_from_its_diff_on_the_users_file(client: LanguageClient):
    # the diff of #4 offers "Accept only this hunk (X = 0.8 -> 0.6)"; the user's file is the origin (X = 1.0,
    # no #2): #4's hunk has no X = 0.8 to change. Before: "no longer apply"; now as trained, and said so
    uri = show(client, CRASHY)
    result = await command(client, "nightlab.experiment.accept", {"number": 4, "path": "train.py", "hunks": [0]})
    (change,) = client.edits[0].document_changes
    assert change.text_document.uri == uri
    assert apply_text_edits(CRASHY, change.edits) == CRASHY.replace("X = 1.0 ", "X = 0.6 ")  # that hunk only
    assert "train.py: #4 as trained, with the kept #2 under it" in result["message"] and result["conflicts"] == []
