"""`nightlab plot/status/results PATH` on autoresearch's results.tsv (issue 12, item 5): Karpathy's real
log of March 8 (126 rows) read and drawn; the chart's scale, labels and legend; nothing written into a
checkout that never ran the loop."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from matplotlib.colors import to_rgb
from matplotlib.image import imread

from nightlab.server.cli.plot import KEEP_COLOUR, progress_figure
from nightlab.server.cli.sources import read_results_tsv
from support.workspace import make_workspace

NIGHTLAB = [sys.executable, "-m", "nightlab.server.cli"]
MAR8 = Path(__file__).resolve().parents[2] / "shared" / "data" / "autoresearch-mar8" / "results.tsv"
needs_mar8 = pytest.mark.skipif(not MAR8.is_file(), reason=f"the real results log is not here: {MAR8}")


def cli(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*NIGHTLAB, *args], cwd=cwd, capture_output=True, text=True, timeout=120, env=os.environ)


def png_text(path: Path) -> dict[str, str]:
    """The tEXt / zTXt / iTXt chunks of a PNG (matplotlib writes the title given as metadata there)."""
    data, pos, out = path.read_bytes(), 8, {}
    while pos < len(data):
        length, kind = int.from_bytes(data[pos : pos + 4], "big"), data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        if kind == b"tEXt":
            key, _, value = body.partition(b"\0")
            out[key.decode("latin-1")] = value.decode("latin-1")
        elif kind == b"zTXt":
            key, _, value = body.partition(b"\0")
            out[key.decode("latin-1")] = zlib.decompress(value[1:]).decode("latin-1")
        elif kind == b"iTXt":
            key, _, rest = body.partition(b"\0")
            rest = rest[2:]  # compression flag and method
            _, _, rest = rest.partition(b"\0")  # language tag
            _, _, value = rest.partition(b"\0")  # translated keyword
            out[key.decode("latin-1")] = (zlib.decompress(value) if body[len(key) + 1] else value).decode("utf-8")
        pos += 12 + length
    return out


def frontier_share(png: Path) -> float:
    """How much of the axes' height the kept points (KEEP_COLOUR) span. The axes are found by their
    spines: the dark rows and columns that run across most of the image."""
    img = imread(png)[..., :3]
    dark = img.max(axis=-1) < 0.3
    rows = np.where(dark.sum(axis=1) > 0.5 * img.shape[1])[0]
    cols = np.where(dark.sum(axis=0) > 0.3 * img.shape[0])[0]
    top, bottom, left, right = rows.min(), rows.max(), cols.min(), cols.max()
    assert bottom - top > 0.5 * img.shape[0] and right - left > 0.5 * img.shape[1], "axes not found"
    keep = np.abs(img - np.array(to_rgb(KEEP_COLOUR))).max(axis=-1) < 0.03
    kept_rows = np.where(keep[top : bottom + 1, left : right + 1].any(axis=1))[0]
    return float(kept_rows.max() - kept_rows.min()) / float(bottom - top)


@pytest.fixture
def mar8(tmp_path: Path) -> Path:
    """A folder holding a copy of the real results.tsv (so that progress.png is written there)."""
    folder = tmp_path / "autoresearch-mar8"
    folder.mkdir()
    shutil.copy(MAR8, folder / "results.tsv")
    return folder


@needs_mar8
def test_plot_of_the_real_mar8_results_tsv(mar8: Path) -> None:
    """Bug: `nightlab plot` read only Nightlab's ledger; a folder holding only results.tsv was refused."""
    proc = cli(mar8.parent, "plot", str(mar8))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    png = mar8 / "progress.png"
    assert png.is_file() and str(png.name) in proc.stdout
    title = png_text(png)["Title"]
    assert "126 experiments, 23 kept, 1 crash" in title and "best val_bpb 0.969686" in title, title
    # Bug: one diverged run (3.215849) stretched the scale: the frontier filled the bottom fifth.
    assert frontier_share(png) >= 0.5
    out = mar8.parent / "elsewhere" / "chart.png"
    assert cli(mar8.parent, "plot", str(mar8 / "results.tsv"), "-o", str(out)).returncode == 0
    assert out.is_file() and "126 experiments" in png_text(out)["Title"]


@needs_mar8
def test_status_and_results_read_a_results_tsv(mar8: Path) -> None:
    status = cli(mar8.parent, "status", str(mar8 / "results.tsv"))
    assert status.returncode == 0, status.stderr
    assert "126 experiments" in status.stdout and "keep 23" in status.stdout and "crash 1" in status.stdout
    assert "discard 102" in status.stdout and "best val_bpb: 0.969686 (#119" in status.stdout
    assert "-0.028214 vs baseline #1" in status.stdout
    results = cli(mar8, "results", ".", "--status", "crash")
    assert results.returncode == 0, results.stderr
    assert "│ 16 │ crash" in results.stdout and "│ 17 │" not in results.stdout


@needs_mar8
def test_an_autoresearch_checkout_plots_its_results_tsv_and_keeps_clean(mar8: Path) -> None:
    """Bug: in a checkout holding results.tsv, `nightlab plot` drew "0 experiments" (and wrote .nightlab/)."""
    for name in ("prepare.py", "train.py", "program.md"):
        (mar8 / name).write_text("# autoresearch\n")
    proc = cli(mar8, "plot")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "126 experiments, 23 kept, 1 crash" in png_text(mar8 / "progress.png")["Title"]
    assert not (mar8 / ".nightlab").exists()
    assert "126 experiments" in cli(mar8, "status").stdout


def test_plot_in_a_checkout_that_never_ran_writes_nothing(tmp_path: Path) -> None:
    """Bug: `nightlab plot` in a fresh checkout left an untracked .nightlab/ holding an empty chart."""
    ws = make_workspace(tmp_path)
    proc = cli(ws, "plot")
    assert proc.returncode == 1 and "nothing to plot" in proc.stderr, proc.stdout + proc.stderr
    assert not (ws / ".nightlab").exists()
    untracked = subprocess.run(["git", "status", "--porcelain"], cwd=ws, capture_output=True, text=True).stdout
    assert untracked == ""


@needs_mar8
def test_labels_never_overlap_and_the_legend_covers_no_data() -> None:
    """Bug: the first fifteen labels overlapped, and the legend hid kept points #3-#14. Each label is
    drawn alone and its ink compared with the chart without labels: no pixel is inked by two labels,
    and every label stays inside the axes."""
    fig = progress_figure(read_results_tsv(MAR8))
    ax = fig.axes[0]
    labels = list(ax.texts)
    texts = [t.get_text() for t in labels]
    assert len(labels) >= 8 and "baseline" in texts and "warmdown 0.7 to 0.75" in texts, texts  # first, best
    renderer = fig.canvas.get_renderer()
    legend = ax.get_legend().get_window_extent(renderer)
    assert not legend.overlaps(ax.get_window_extent(renderer))

    def ink() -> np.ndarray:
        fig.canvas.draw()
        return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()

    for t in labels:
        t.set_visible(False)
    bare = ink()
    used = np.zeros(bare.shape[:2], dtype=int)
    box = ax.get_window_extent(renderer)
    height = bare.shape[0]
    for t in labels:
        t.set_visible(True)
        mask = (ink() != bare).any(axis=-1)
        t.set_visible(False)
        ys, xs = np.nonzero(mask)
        assert len(xs), t.get_text()
        assert xs.min() >= box.x0 - 1 and xs.max() <= box.x1 + 1, t.get_text()
        assert height - ys.max() >= box.y0 - 1 and height - ys.min() <= box.y1 + 1, t.get_text()
        used += mask
    assert used.max() == 1, "two labels ink the same pixel"
