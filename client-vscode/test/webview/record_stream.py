"""Record the panel test's stream of notifications from a REAL run of Nightlab's language server.

Makes the default experiment's workspace (`nightlab init --profile cpu`: real torch training on the
CPU, a token budget so that runs are short), starts the real server over stdio with pygls's own
client, starts the loop through `workspace/executeCommand`, and writes every `nightlab/*` notification
with its time offset into stream.json, then the best experiment's loss curve (`nightlab/experimentCurve`).
test/webview/webview.test.mjs replays the file, time-compressed, as the host's messages to the panel.

Run it from anywhere with the project's Python (it has nightlab installed editable):

    /work/main/.venv/bin/python client-vscode/test/webview/record_stream.py

Defaults: 9 experiments of 81,920 tokens each (20 optimizer steps: the trainer's first 10 are warm-up
and not budgeted, so their `elapsedS` is 0 and a 40,960-token run has no time axis at all), with the
offline agent and the strict policy; once the 9th has reported a few steps the script stops the loop, so
the stream also holds an interrupted experiment and the Stop path. 3 to 10 minutes on two busy CPU cores.
Must not import: the extension or anything of the test.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lsprotocol import types
from pygls.lsp.client import LanguageClient

HERE = Path(__file__).resolve().parent
OUT = HERE / "stream.json"
NOTIFICATIONS = ("nightlab/loopState", "nightlab/experimentStarted", "nightlab/experimentProgress",
                 "nightlab/experimentFinished")
MAX_PROGRESS_PER_RUN = 60  # progress samples kept per (experiment, stage): the file stays small


def as_dict(value):
    """pygls gives custom params as namedtuples (nested ones too): back to plain JSON values."""
    if hasattr(value, "_asdict"):
        return {k: as_dict(v) for k, v in value._asdict().items()}
    if isinstance(value, (list, tuple)):
        return [as_dict(v) for v in value]
    return value


def thin_progress(events: list[dict], keep: int) -> tuple[list[dict], int]:
    """At most `keep` progress samples per (number, stage), evenly spaced, first and last kept."""
    groups: dict[tuple, list[int]] = {}
    for i, e in enumerate(events):
        if e["method"] == "nightlab/experimentProgress":
            groups.setdefault((e["params"]["number"], e["params"]["stage"]), []).append(i)
    drop = set()
    for idx in groups.values():
        if len(idx) > keep:
            chosen = {idx[round(j * (len(idx) - 1) / (keep - 1))] for j in range(keep)}
            drop.update(i for i in idx if i not in chosen)
    return [e for i, e in enumerate(events) if i not in drop], len(drop)


async def record(ws: Path, experiments: int, tokens: int, stop_after: int, timeout: float) -> dict:
    client = LanguageClient("nightlab-record", "0.1")
    events: list[dict] = []
    stopped = asyncio.get_running_loop().create_future()
    t0 = time.monotonic()

    stop_sent: list[dict] = []

    def stop_loop():
        stop_sent.append({"t": round(time.monotonic() - t0, 3)})
        asyncio.ensure_future(client.workspace_execute_command_async(types.ExecuteCommandParams(
            command="nightlab.loop.stop", arguments=[{}])))

    def on(method):
        def handler(params):
            params = as_dict(params)
            events.append({"t": round(time.monotonic() - t0, 3), "method": method, "params": params})
            if method == "nightlab/experimentProgress" and stop_after and not stop_sent \
                    and params["number"] == experiments and params["step"] >= stop_after:
                stop_loop()
            if method == "nightlab/loopState" and params["state"] in ("stopped", "errored") \
                    and len(events) > 1 and not stopped.done():
                stopped.set_result(params)
        return handler

    for method in NOTIFICATIONS:
        client.feature(method)(on(method))
    for method in (types.WINDOW_SHOW_MESSAGE, types.WINDOW_LOG_MESSAGE, types.PROGRESS):
        client.feature(method)(lambda params: None)
    client.feature(types.WINDOW_WORK_DONE_PROGRESS_CREATE)(lambda params: None)

    await client.start_io(sys.executable, "-m", "nightlab.server")
    try:
        await client.initialize_async(types.InitializeParams(
            capabilities=types.ClientCapabilities(), root_uri=ws.as_uri(),
            workspace_folders=[types.WorkspaceFolder(uri=ws.as_uri(), name=ws.name)]))
        client.initialized(types.InitializedParams())
        await asyncio.sleep(0.5)  # the loopState sent right after `initialized`
        args = {"agent": "offline", "maxExperiments": experiments, "budgetTokens": tokens, "policy": "strict"}
        t_start = round(time.monotonic() - t0, 3)
        await client.workspace_execute_command_async(types.ExecuteCommandParams(
            command="nightlab.loop.start", arguments=[args]))
        final = await asyncio.wait_for(stopped, timeout)
        finished = [e["params"]["experiment"] for e in events if e["method"] == "nightlab/experimentFinished"]
        best = (final.get("best") or {}).get("number")
        curve = None
        if best is not None:
            result = await client.protocol.send_request_async("nightlab/experimentCurve",
                                                              {"number": best, "stage": "run"})
            curve = as_dict(result)
        await client.shutdown_async(None)
        client.exit(None)
    finally:
        await client.stop()
    return {"start": {"t": t_start, "arguments": [args]}, "stop": stop_sent[0] if stop_sent else None,
            "events": events, "bestCurve": curve,
            "finished": [(f["number"], f["status"]) for f in finished]}


def write_stream(data: dict, path: Path) -> None:
    """JSON with one notification a line: small, and a new recording reads as a diff."""
    compact = lambda v: json.dumps(v, separators=(",", ":"))  # noqa: E731
    events = ",\n".join(compact(e) for e in data["events"])
    path.write_text(f'{{"meta":{json.dumps(data["meta"], indent=1)},\n"bestCurve":{compact(data["bestCurve"])},\n'
                    f'"events":[\n{events}\n]}}\n')


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--experiments", type=int, default=9)
    ap.add_argument("--tokens", type=int, default=81920)
    ap.add_argument("--stop-after", type=int, default=14,
                    help="stop the loop once the last experiment reached this step (0: let it finish)")
    ap.add_argument("--timeout", type=float, default=900)
    ap.add_argument("--out", type=Path, default=OUT)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="nightlab-record-") as tmp:
        ws = Path(tmp) / "demo"
        subprocess.run([sys.executable, "-m", "nightlab.server.cli", "init", str(ws), "--profile", "cpu"],
                       check=True, capture_output=True, text=True)
        rec = asyncio.run(record(ws, a.experiments, a.tokens, a.stop_after, a.timeout))
    events, dropped = thin_progress(rec["events"], MAX_PROGRESS_PER_RUN)
    progress = sum(e["method"] == "nightlab/experimentProgress" for e in events)
    data = {
        "meta": {
            "recordedBy": "client-vscode/test/webview/record_stream.py",
            "recordedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "workspace": "nightlab init --profile cpu (the default experiment, real torch training on the CPU)",
            "start": rec["start"],
            "stop": rec["stop"],
            "durationS": events[-1]["t"] if events else 0,
            "finished": rec["finished"],
            "progressThinning": f"at most {MAX_PROGRESS_PER_RUN} progress samples per (experiment, stage), "
                                f"evenly spaced; {dropped} of {progress + dropped} dropped",
            "note": "`t` is seconds since the client started the server; roots are the recording's temp folder",
            "cpus": os.cpu_count(),
        },
        "events": events,
        "bestCurve": rec["bestCurve"],
    }
    write_stream(data, a.out)
    print(f"{len(events)} notifications ({progress} progress, {dropped} thinned), finished {rec['finished']}, "
          f"best curve {len((rec['bestCurve'] or {}).get('points') or [])} points -> {a.out} "
          f"({a.out.stat().st_size // 1024} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
