"""The progress chart: a valid PNG for a real-looking history, an empty one, all crashes, odd metrics."""

from __future__ import annotations

import functools
import struct
import zlib
from pathlib import Path

import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg

from nightlab.server.cli.plot import plot_progress
from nightlab.server.core.types import Experiment

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def exp(number: int, status: str, metric: float | None, description: str = "") -> Experiment:
    return Experiment(number=number, tag="t", description=description or f"idea {number}", status=status, metric=metric)


HISTORY = [
    exp(1, "keep", 1.120, "baseline"),
    exp(2, "discard", 1.131, "double the learning rate"),
    exp(3, "keep", 1.102, "warmdown ratio 0.5 instead of 0.3, a much longer description than fits a label"),
    exp(4, "crash", None, "swap in flash attention"),
    exp(5, "discard", 4.5, "diverged: lr x10"),  # an outlier: drawn at the edge, not on the scale
    exp(6, "keep", 1.095, "depth 6"),
    exp(7, "discard", 1.099, "weight decay 0.2"),
    exp(8, "interrupted", None, "stopped by the user"),
    exp(9, "running", None, "rotary base 50000"),
    exp(9, "discard", 1.097, "rotary base 50000"),  # a later record of the same number wins
    exp(10, "keep", None, "a kept record with no metric"),
    exp(11, "discard", float("nan"), "nan metric"),
]

CASES = {
    "history": HISTORY,
    "empty": [],
    "all_crash": [exp(n, "crash", None, "broken") for n in (1, 2, 3)],
    "only_pending": [exp(1, "running", None, "baseline")],
    "single_keep": [exp(1, "keep", 1.0, "baseline")],
}


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk, after checking the signature and the chunk's CRC."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13
    body = data[16 : 16 + length]
    (crc,) = struct.unpack(">I", data[16 + length : 20 + length])
    assert zlib.crc32(kind + body) == crc
    assert data.endswith(b"IEND\xaeB`\x82")
    return struct.unpack(">II", body[:8])


@pytest.mark.parametrize("name", sorted(CASES))
def test_writes_a_png(tmp_path, monkeypatch, name):
    rendered = []
    original = FigureCanvasAgg.print_png

    @functools.wraps(original)  # savefig passes only the keywords print_png's signature names
    def spy(self, *args, **kwargs):
        rendered.append(type(self))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(FigureCanvasAgg, "print_png", spy)
    monkeypatch.delenv("DISPLAY", raising=False)
    out = plot_progress(CASES[name], tmp_path / "sub" / "progress.png")
    assert out == tmp_path / "sub" / "progress.png"
    width, height = png_size(out)
    assert (width, height) == (14 * 120, 7 * 120)
    assert out.stat().st_size > 10_000  # a drawn chart, not a blank canvas
    assert rendered and set(rendered) == {FigureCanvasAgg}  # (the layout engine renders once more to measure)
    assert list(out.parent.iterdir()) == [out]  # no temporary file left beside it


def test_higher_is_better_and_rewrite(tmp_path):
    out = tmp_path / "progress.png"
    history = [exp(1, "keep", 0.50), exp(2, "discard", 0.40), exp(3, "keep", 0.61), exp(4, "discard", -3.0)]
    plot_progress(history, out, metric_name="accuracy", direction="higher", title="accuracy")
    first = out.read_bytes()
    plot_progress(history[:2], out, metric_name="accuracy", direction="higher")
    assert out.read_bytes() != first
    png_size(out)


def test_rejects_an_unknown_direction(tmp_path):
    with pytest.raises(ValueError):
        plot_progress([], tmp_path / "p.png", direction="sideways")
