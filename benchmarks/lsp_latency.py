"""Latency of the language server's document requests on a 1,000-experiment ledger, while a run trains.

What it builds (a throw-away workspace under a temp dir):
  * a stand-in trainer (sleeps its time budget while writing step events, prints a val_bpb with a
    minimum in its knobs X, Y, Z; no torch), a git repository, nightlab.toml (strict policy, no
    propose-ahead);
  * `--real` experiments (default 40) run by the real Engine with the offline agent: real git commits,
    refs, amended verdicts and ledger records, exactly as a night makes them;
  * the rest, up to `--experiments` (default 1,000), SYNTHESISED: copies of the real non-baseline
    experiments' two ledger records each (the "running" one and the final one, as the engine writes
    them), renumbered, pointing at the real experiments' commits (so every one has a real parent/commit
    pair and a real diff), appended to experiments.jsonl with matching results.tsv rows. A copy of a kept
    experiment is recorded as "discard" (meta.synthetic_of = the original number), so the ledger's best
    is still the branch head and the engine can resume on it. 40 real experiments take ~10 s on 2 cores;
    1,000 would take many minutes (more per experiment as the ledger grows, since the engine re-reads
    it). Not the point here: the server's work per request does not depend on
    whether two records share a commit: it reads the whole ledger, and its file-text cache is keyed by
    experiment number, so each copy costs its own `git show`s once.

What it measures: the real server (`python -m nightlab.server`, stdio) driven by the small JSON-RPC
client below (no pygls on the client side, so the client adds little). It opens train.py, then:
  1. cold: the first hover, code action and code lens (they fill the server's file-text cache);
  2. idle: `--requests` of each (hover on the knob line X, code action on line 0, code lens),
     interleaved, sequential (one in flight at a time), a round every `--interval` ms (100) as a
     cursor moves: 200 rounds take >= 20 s, so the training phase spans the end of a 20 s run (the
     engine's verdict, commit and next proposal) and the start of the next;
  3. training: the loop is started by command (offline agent, `--run-seconds` per run) and the same
     requests are sent while a run is in flight; only the samples whose request and answer both fell
     inside a run (between experimentStarted and experimentFinished) are counted.
p50/p99 in ms per request kind; the goal is p99 < 20 ms while training runs.
`--profile FILE` runs the server under cProfile and prints where its time went; `--server SCRIPT` runs
another server entry point (a patched one) for an A/B comparison on the same workspace recipe.

    .venv/bin/python benchmarks/lsp_latency.py
    .venv/bin/python benchmarks/lsp_latency.py --experiments 200 --requests 100 --profile /tmp/lsp.prof

Light on CPU apart from the server itself: the stand-in sleeps. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from nightlab.server.core.settings import load_settings
from nightlab.server.core.types import Experiment
from nightlab.server.loop.engine import Engine
from nightlab.server.record import seal
from nightlab.server.record.ledger import tsv_row

STAND_IN = """import json, os, time
X = 1.0           # knobs: this run's val_bpb is 1 + (X - 0.3)^2 + (Y - 0.8)^2 + |Z - 0.25|
Y = 0.5
Z = 0.25
STEPS = 10
budget = float(os.environ.get("NIGHTLAB_BUDGET_SECONDS", "0.05"))
events = open(os.environ["NIGHTLAB_EVENTS"], "a") if os.environ.get("NIGHTLAB_EVENTS") else None
def emit(**e):
    if events:
        events.write(json.dumps(e) + "\\n"); events.flush()
BPB = 1 + (X - 0.3) ** 2 + (Y - 0.8) ** 2 + abs(Z - 0.25)
t0 = time.time()
emit(event="start", device="cpu", budget_mode="time", budget=budget, num_params_M=0.0, seed=0, t=t0)
for step in range(1, STEPS + 1):
    time.sleep(max(0.0, t0 + budget * step / STEPS - time.time()))
    emit(event="step", step=step, elapsed_s=time.time() - t0, loss=BPB, tok_per_s=1000.0, mfu=0.0,
         lr=0.0, progress=step / STEPS, t=time.time())
print("---")
print(f"val_bpb:          {BPB:.6f}")
print(f"training_seconds: {time.time() - t0:.1f}")
print(f"total_seconds:    {time.time() - t0:.1f}")
print("peak_vram_mb:     0.0")
print(f"num_steps:        {STEPS}")
"""
TOML = (
    '[run]\ncommand = "python train.py"\npropose_ahead = false\n[budget]\nseconds = 0.05\n'
    'timeout_seconds = {timeout}\n[policy]\nname = "strict"\n'
)


def git(ws: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=ws, capture_output=True, text=True, check=True).stdout.strip()


def build_workspace(root: Path, real: int, total: int, run_seconds: float) -> tuple[Path, dict]:
    ws = root / "ws"
    ws.mkdir()
    (ws / "train.py").write_text(STAND_IN)
    (ws / "prepare.py").write_text("# the fixed harness\n")
    (ws / "program.md").write_text("lower val_bpb\n")
    (ws / "nightlab.toml").write_text(TOML.format(timeout=int(run_seconds * 3 + 60)))
    git(ws, "init", "-q")
    git(ws, "add", "-A")
    git(ws, "-c", "user.name=u", "-c", "user.email=u@x", "commit", "-qm", "init")

    t0 = time.perf_counter()
    engine = Engine(load_settings(ws, {"max_experiments": real, "agent": "offline"}))
    asyncio.run(engine.run())
    t_real = time.perf_counter() - t0
    ledger = engine.ledger
    exps = ledger.experiments()
    records = ledger.records()
    first_record = {}
    for rec in records:
        first_record.setdefault(rec.number, rec)
    sources = [e for e in exps if not e.is_baseline and e.commit and e.status in ("keep", "discard", "crash")]

    t0 = time.perf_counter()
    number = max(e.number for e in exps)
    jsonl, tsv = [], []
    i = 0
    key = seal.read_key(ledger.dir)
    assert key is not None, "the loop's ledger has no key"
    seq = max(int(r.get("seal", {}).get("n", 0)) for r in map(json.loads, ledger.jsonl.read_text().splitlines()))
    while number < total:
        number += 1
        src = sources[i % len(sources)]
        i += 1
        meta = {**src.meta, "synthetic_of": src.number}
        running = Experiment.from_json({**first_record[src.number].to_json(), "number": number, "meta": meta})
        final = Experiment.from_json({**src.to_json(), "number": number, "meta": meta})
        if final.status == "keep":
            final.status = "discard"
            final.decision_reason = f"synthetic copy of #{src.number} (kept there)"
        for rec in (running, final):  # sealed like the loop's own records (server/record/seal.py)
            seq += 1
            line = seal.sealed(key, seq, rec.to_json())
            jsonl.append(json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n")
        tsv.append(tsv_row(final))
    with open(ledger.jsonl, "a", encoding="utf-8") as f:
        f.writelines(jsonl)
    with open(ledger.tsv, "a", encoding="utf-8") as f:
        f.writelines(tsv)
    t_synth = time.perf_counter() - t0
    final_exps = ledger.experiments()
    stats = {
        "real": len(exps),
        "real_s": t_real,
        "synthetic": len(final_exps) - len(exps),
        "synthetic_s": t_synth,
        "kept_real": sum(e.status == "keep" for e in exps),
        "experiments": len(final_exps),
        "jsonl_lines": len(ledger.records()),
        "jsonl_bytes": ledger.jsonl.stat().st_size,
    }
    return ws, stats


class Client:
    """A minimal LSP client over stdio: Content-Length framing, futures for answers, a null (or
    `applied`) answer to the server's own requests, and a timestamped log of its notifications."""

    def __init__(self) -> None:
        self.proc: asyncio.subprocess.Process | None = None
        self.next_id = 0
        self.pending: dict[int, asyncio.Future] = {}
        self.notes: list[tuple[float, str, Any]] = []
        self.running: set[int] = set()
        self.run_started = asyncio.Event()
        self.stopped = asyncio.Event()
        self.server_requests: dict[str, int] = {}

    async def start(self, cmd: list[str], cwd: Path, stderr) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            *cmd, cwd=cwd, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=stderr, limit=2**26
        )
        self.reader = asyncio.create_task(self._read())

    def _send(self, msg: dict) -> None:
        body = json.dumps(msg, separators=(",", ":")).encode()
        self.proc.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)

    async def _read(self) -> None:
        out = self.proc.stdout
        while True:
            length = None
            while True:
                line = await out.readline()
                if not line:
                    return
                if line in (b"\r\n", b"\n"):
                    break
                name, _, value = line.decode().partition(":")
                if name.lower() == "content-length":
                    length = int(value)
            msg = json.loads(await out.readexactly(length))
            now = time.perf_counter()
            if "method" not in msg:
                fut = self.pending.pop(msg["id"], None)
                if fut is not None and not fut.done():
                    fut.set_result((now, msg))
            elif "id" in msg:  # the server asks: progress tokens, applyEdit, refreshes
                method = msg["method"]
                self.server_requests[method] = self.server_requests.get(method, 0) + 1
                self._send(
                    {
                        "jsonrpc": "2.0",
                        "id": msg["id"],
                        "result": {"applied": True} if method == "workspace/applyEdit" else None,
                    }
                )
            else:
                method, params = msg["method"], msg.get("params")
                self.notes.append((now, method, params))
                if method == "nightlab/experimentStarted":
                    self.running.add(params.get("number", (params.get("experiment") or {}).get("number")))
                elif method == "nightlab/experimentProgress" and params.get("number") in self.running:
                    self.run_started.set()
                elif method == "nightlab/experimentFinished":
                    self.running.discard(params.get("number", (params.get("experiment") or {}).get("number")))
                elif method == "nightlab/loopState" and params.get("state") in ("stopped", "errored"):
                    self.stopped.set()

    async def request(self, method: str, params: Any, timeout: float = 120) -> tuple[float, Any, bool]:
        """(ms, result, in_run): in_run when a run was in flight both when it was sent and answered."""
        self.next_id += 1
        fut = asyncio.get_running_loop().create_future()
        self.pending[self.next_id] = fut
        in_run = bool(self.running)
        t0 = time.perf_counter()
        self._send({"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params})
        await self.proc.stdin.drain()
        t1, msg = await asyncio.wait_for(fut, timeout)
        if "error" in msg:
            raise RuntimeError(f"{method}: {msg['error']}")
        return 1000 * (t1 - t0), msg.get("result"), in_run and bool(self.running)

    def notify(self, method: str, params: Any) -> None:
        self._send({"jsonrpc": "2.0", "method": method, "params": params})


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    k = (len(s) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


async def measure(ws: Path, args) -> dict:
    server = shlex.split(args.server) if args.server else ["-m", "nightlab.server"]
    cmd = [sys.executable, *server]
    if args.profile:
        cmd = [sys.executable, "-m", "cProfile", "-o", str(args.profile), *server]
    stderr_path = ws.parent / "server.stderr"
    client = Client()
    with open(stderr_path, "wb") as stderr:
        await client.start(cmd, ws, stderr)
        uri = ws.as_uri()
        caps = {
            "window": {"workDoneProgress": True},
            "workspace": {
                "applyEdit": True,
                "workspaceFolders": True,
                "codeLens": {"refreshSupport": True},
                "inlayHint": {"refreshSupport": True},
            },
            "textDocument": {
                "hover": {"contentFormat": ["markdown", "plaintext"]},
                "codeAction": {
                    "codeActionLiteralSupport": {
                        "codeActionKind": {"valueSet": ["quickfix", "refactor", "refactor.rewrite"]}
                    }
                },
            },
        }
        await client.request(
            "initialize",
            {
                "processId": os.getpid(),
                "rootUri": uri,
                "capabilities": caps,
                "workspaceFolders": [{"uri": uri, "name": "ws"}],
            },
        )
        client.notify("initialized", {})
        text = (ws / "train.py").read_text()
        doc_uri = (ws / "train.py").as_uri()
        client.notify(
            "textDocument/didOpen",
            {"textDocument": {"uri": doc_uri, "languageId": "python", "version": 1, "text": text}},
        )
        x_line = next(i for i, line in enumerate(text.splitlines()) if line.startswith("X = "))
        doc = {"uri": doc_uri}
        kinds = {
            "hover": ("textDocument/hover", {"textDocument": doc, "position": {"line": x_line, "character": 1}}),
            "codeAction": (
                "textDocument/codeAction",
                {
                    "textDocument": doc,
                    "range": {"start": {"line": 0, "character": 0}, "end": {"line": 0, "character": 0}},
                    "context": {"diagnostics": []},
                },
            ),
            "codeLens": ("textDocument/codeLens", {"textDocument": doc}),
        }
        results: dict[str, dict[str, Any]] = {
            k: {"cold": None, "idle": [], "training": [], "outside": []} for k in kinds
        }
        shapes = {}
        for kind, (method, params) in kinds.items():
            ms, result, _ = await client.request(method, params)
            results[kind]["cold"] = ms
            shapes[kind] = (
                len(result)
                if isinstance(result, list)
                else len(result["contents"]["value"].splitlines())
                if result
                else 0
            )
        for _ in range(args.requests):
            t_round = time.perf_counter()
            for kind, (method, params) in kinds.items():
                ms, _, _ = await client.request(method, params)
                results[kind]["idle"].append(ms)
            await asyncio.sleep(max(0.0, t_round + args.interval / 1000 - time.perf_counter()))

        await client.request(
            "workspace/executeCommand",
            {
                "command": "nightlab.loop.start",
                "arguments": [
                    {
                        "agent": "offline",
                        "maxExperiments": args.runs,
                        "policy": "strict",
                        "budgetSeconds": args.run_seconds,
                    }
                ],
            },
        )
        await asyncio.wait_for(client.run_started.wait(), 120)
        t_train0 = time.perf_counter()
        while min(len(r["training"]) for r in results.values()) < args.requests and not client.stopped.is_set():
            t_round = time.perf_counter()
            for kind, (method, params) in kinds.items():
                ms, _, in_run = await client.request(method, params)
                if in_run:
                    results[kind]["training"].append(ms)
                else:
                    results[kind]["outside"].append(ms)
            await asyncio.sleep(max(0.0, t_round + args.interval / 1000 - time.perf_counter()))
        t_train = time.perf_counter() - t_train0
        try:
            await client.request(
                "workspace/executeCommand",
                {"command": "nightlab.loop.stop", "arguments": []},
                timeout=args.run_seconds * 3 + 60,
            )
        except RuntimeError:
            pass  # it stopped by itself
        await client.request("shutdown", None)
        client.notify("exit", None)
        await client.proc.stdin.drain()
        try:
            await asyncio.wait_for(client.proc.wait(), 30)
        except asyncio.TimeoutError:
            client.proc.kill()
            await client.proc.wait()
    notes: dict[str, int] = {}
    for _, method, _ in client.notes:
        notes[method] = notes.get(method, 0) + 1
    return {
        "results": results,
        "shapes": shapes,
        "notifications": notes,
        "server_requests": client.server_requests,
        "measure_training_s": t_train,
        "stderr_bytes": stderr_path.stat().st_size,
        "stderr": stderr_path,
    }


def report(stats: dict, m: dict, args) -> None:
    print(
        f"\nworkspace: {stats['experiments']} experiments ({stats['real']} run by the engine in "
        f"{stats['real_s']:.1f} s, {stats['kept_real']} kept; {stats['synthetic']} synthesised in "
        f"{stats['synthetic_s']:.2f} s); experiments.jsonl {stats['jsonl_lines']} records, "
        f"{stats['jsonl_bytes'] / 1e6:.1f} MB"
    )
    print(
        f"answers: hover {m['shapes']['hover']} lines, {m['shapes']['codeAction']} code actions, "
        f"{m['shapes']['codeLens']} code lenses"
    )
    print(
        f"\n  {'request':<12}{'cold ms':>9}{'idle p50':>10}{'idle p99':>10}{'train p50':>11}{'train p99':>11}"
        f"{'train max':>11}{'n train':>9}"
    )
    ok = True
    for kind, r in m["results"].items():
        tr = r["training"]
        p99 = percentile(tr, 99)
        ok = ok and len(tr) > 0 and p99 < 20
        print(
            f"  {kind:<12}{r['cold']:9.1f}{percentile(r['idle'], 50):10.1f}{percentile(r['idle'], 99):10.1f}"
            f"{percentile(tr, 50):11.1f}{p99:11.1f}{max(tr, default=float('nan')):11.1f}{len(tr):9d}"
        )
    outside = [x for r in m["results"].values() for x in r["outside"]]
    print(
        f"\n  training phase: {m['measure_training_s']:.1f} s of requests; {len(outside)} samples fell between "
        f"runs (not counted above; max {max(outside, default=float('nan')):.1f} ms)"
    )
    print("  notifications seen: " + ", ".join(f"{k} {v}" for k, v in sorted(m["notifications"].items())))
    print(f"  server stderr (its log): {m['stderr_bytes'] / 1e6:.2f} MB")
    print(f"\ngoal p99 < 20 ms while training runs: {'MET' if ok else 'NOT MET'}")


def print_profile(path: Path, top: int = 30) -> None:
    import pstats

    print(f"\nserver profile ({path}), by cumulative time, handlers and below:")
    st = pstats.Stats(str(path))
    st.sort_stats("cumulative").print_stats(r"/server/|ledger|json|subprocess", top)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--experiments", type=int, default=1000, help="ledger size (default 1000)")
    parser.add_argument("--real", type=int, default=40, help="of them run by the engine (default 40)")
    parser.add_argument("--requests", type=int, default=200, help="requests of each kind per phase (default 200)")
    parser.add_argument(
        "--interval",
        type=float,
        default=100.0,
        help="ms from the start of one round (hover, code action, code lens) to the next, as a "
        "cursor moves; with the defaults the training phase spans a run's end (default 100)",
    )
    parser.add_argument("--run-seconds", type=float, default=20.0, help="the stand-in run's length (default 20)")
    parser.add_argument(
        "--runs",
        type=int,
        default=10,
        help="runs the measured loop may start; it is stopped once the samples are in (default 10)",
    )
    parser.add_argument("--profile", type=Path, help="run the server under cProfile, write the stats here")
    parser.add_argument(
        "--server",
        help="what `python` runs as the server instead of `-m nightlab.server` "
        "(e.g. a script that patches it first, for an A/B comparison)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp workspace (its path is printed)")
    args = parser.parse_args(argv)

    root = Path(tempfile.mkdtemp(prefix="nightlab-lsp-latency-"))
    os.environ.setdefault("NIGHTLAB_CACHE", str(root / "cache"))
    ws, stats = build_workspace(root, args.real, args.experiments, args.run_seconds)
    m = asyncio.run(measure(ws, args))
    report(stats, m, args)
    if args.profile:
        print_profile(args.profile)
    if args.keep:
        print(f"\nworkspace kept: {ws}  (server log: {m['stderr']})")
    else:
        import shutil

        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
