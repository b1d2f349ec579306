"""The Neovim plugin in editors/nvim, driven in headless Neovim (0.7.2 here) through its commands by
tests/nvim_plugin_client.lua: setup() attaches the server to train.py of a stand-in workspace,
:NightlabStart runs the loop (offline agent, the stand-in's 1 s budget, 3 experiments: the offline
agent's first proposal is a discard, its second a keep), the loop's notifications arrive through
vim.notify, :NightlabStatus says the state, :NightlabApplyBest puts the best commit's train.py into
the buffer (the file on disk stays the user's)."""

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from support.nvim import headless
from support.workspace import STAND_IN, git, make_workspace, merge_toml

NVIM = shutil.which("nvim")
ROOT = Path(__file__).resolve().parents[1]
PLUGIN = ROOT / "editors" / "nvim"
LUA = Path(__file__).with_name("nvim_plugin_client.lua")

pytestmark = pytest.mark.skipif(NVIM is None, reason="nvim (Neovim >= 0.7) is not on PATH: apt-get install neovim")


def test_the_plugin_starts_the_loop_notifies_and_applies_the_best(tmp_path):
    ws = make_workspace(tmp_path, STAND_IN)
    (ws / "nightlab.toml").write_text(
        merge_toml((ws / "nightlab.toml").read_text(), '[run]\npropose_ahead = false\n[policy]\nname = "strict"\n')
    )
    git(ws, "-c", "user.name=u", "-c", "user.email=u@x", "commit", "-qam", "settings")
    out = tmp_path / "out"
    out.mkdir()
    home = tmp_path / "nvim-home"
    env = {
        **os.environ,
        "NO_COLOR": "1",
        "NIGHTLAB_PYTHON": sys.executable,
        "NIGHTLAB_WS": str(ws),
        "NIGHTLAB_OUT": str(out),
        "NIGHTLAB_WAIT_MS": "90000",
        "XDG_CACHE_HOME": str(home / "cache"),
        "XDG_STATE_HOME": str(home / "state"),
        "XDG_DATA_HOME": str(home / "data"),
        "XDG_CONFIG_HOME": str(home / "config"),
    }
    proc, summary = headless(NVIM, ["--cmd", f"set rtp^={PLUGIN}", "-c", f"luafile {LUA}"], ws, env, out, 180)
    context = f"nvim rc {proc.returncode}\nsummary: {json.dumps(summary, indent=1)}\nstderr:\n{proc.stderr[-3000:]}"
    assert proc.returncode == 0 and summary and not summary.get("error"), context

    # the plugin's commands exist once it is on the runtimepath (plugin/nightlab.lua)
    assert all(summary["commands"].values()), context
    # the loop's own notifications reached vim.notify: a finished experiment and the loop's stop
    texts = [n["text"] for n in summary["notes"]]
    assert any(t.startswith("Nightlab: #2 ") for t in texts), context
    assert any(t.startswith("Nightlab: loop [main] stopped") for t in texts), context
    assert summary["status"].startswith("Nightlab: [main] stopped") and "3 experiments" in summary["status"], context
    assert summary["statusline"].startswith("nightlab stopped"), context

    best = next(int(t.split("(#")[1].split(")")[0]) for t in [summary["status"]] if "best" in t)
    expected = git(ws, "show", f"refs/nightlab/main/{best}:train.py") + "\n"
    buffer = (out / "buffer.py").read_text()
    assert best > 1, context  # a kept change, not only the baseline
    assert summary["apply"].startswith(f"Nightlab: Apply best: #{best} (1 kept change)"), context
    assert buffer == expected and buffer != STAND_IN, context
    assert summary["modified"] is True
    assert (ws / "train.py").read_text() == STAND_IN  # the edit went to the buffer only
    assert any(title.startswith("Nightlab: ") for title in summary["lenses"]), context
