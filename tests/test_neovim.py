"""A second real LSP client: headless Neovim (0.7.2 from apt, 0.8+ works too) drives the server through
tests/nvim_client.lua. On the stand-in workspace whose loop already ran (the CLI, 5 experiments: four
kept, one crash), Neovim asks for code actions on train.py, applies the first "Apply experiment #"
action's WorkspaceEdit with its own vim.lsp.util, then starts the loop by command and waits for the
custom `nightlab/loopState` notification to say "stopped"."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from support.nvim import headless
from support.workspace import CRASHY, git, make_workspace, merge_toml

NVIM = shutil.which("nvim")
LUA = Path(__file__).with_name("nvim_client.lua")

pytestmark = pytest.mark.skipif(NVIM is None, reason="nvim (Neovim >= 0.7) is not on PATH: apt-get install neovim")


def _log_tail(path: Path, n: int = 60) -> str:
    if not path.exists():
        return f"(no LSP log at {path})"
    return "\n".join(path.read_text(errors="replace").splitlines()[-n:])


def test_neovim_applies_an_experiment_and_sees_the_loop_stop(tmp_path):
    ws = make_workspace(tmp_path, CRASHY)
    (ws / "nightlab.toml").write_text(
        merge_toml((ws / "nightlab.toml").read_text(), '[run]\npropose_ahead = false\n[policy]\nname = "strict"\n')
    )
    git(ws, "-c", "user.name=u", "-c", "user.email=u@x", "commit", "-qam", "settings")
    env = {**os.environ, "NO_COLOR": "1"}
    loop = subprocess.run(
        [sys.executable, "-m", "nightlab.server.cli", "run", "--max-experiments", "5", "--plain"],
        cwd=ws,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert loop.returncode == 0, loop.stdout + loop.stderr

    out = tmp_path / "out"
    out.mkdir()
    home = tmp_path / "nvim-home"  # --clean skips the user's config; keep the LSP log out of ~ too
    env.update(
        NIGHTLAB_PYTHON=sys.executable,
        NIGHTLAB_WS=str(ws),
        NIGHTLAB_OUT=str(out),
        NIGHTLAB_WAIT_MS="60000",
        XDG_CACHE_HOME=str(home / "cache"),
        XDG_STATE_HOME=str(home / "state"),
        XDG_DATA_HOME=str(home / "data"),
        XDG_CONFIG_HOME=str(home / "config"),
    )
    proc, summary = headless(NVIM, ["-c", f"luafile {LUA}"], ws, env, out, 120)
    log = Path(summary.get("log") or home / "cache" / "nvim" / "lsp.log")
    context = (
        f"nvim rc {proc.returncode}\nsummary: {json.dumps(summary, indent=1)}\n"
        f"nvim stdout:\n{proc.stdout}\nnvim stderr:\n{proc.stderr}\nLSP log tail:\n{_log_tail(log)}"
    )
    if not summary or summary.get("error"):
        print(context)
    assert proc.returncode == 0 and summary and not summary.get("error"), context

    # at least one apply action; applied by Neovim, the buffer is that experiment's train.py
    applies = [t for t in summary["titles"] if t.startswith("Apply experiment #")]
    assert applies, context
    number = summary["applied_number"]
    commit = git(ws, "rev-parse", f"refs/nightlab/main/{number}")
    expected = subprocess.run(
        ["git", "show", f"{commit}:train.py"], cwd=ws, capture_output=True, text=True, check=True
    ).stdout
    applied = Path(summary["applied_path"]).read_text()
    assert applied == expected, context
    assert applied != CRASHY
    # the file on disk is the user's: the edit went to the buffer only
    assert (ws / "train.py").read_text() == CRASHY

    # the custom notifications reached Neovim's handler, up to "stopped"; one more experiment finished
    assert summary["stopped"] is True and "stopped" in summary["states"], context
    assert "errored" not in summary["states"], context
    assert [f["number"] for f in summary["finished"]] == [6], context
    assert summary.get("server_exit", {}).get("code") == 0, context
