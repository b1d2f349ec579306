"""SEARCH/REPLACE: application (exact, then whitespace-tolerant, never wrong), parsing, diff summaries."""

from __future__ import annotations

import pytest

from nightlab.server.changes.edits import EditError, apply_edits, diff_summary, parse_search_replace
from nightlab.server.core.types import FileEdit

SRC = """\
LR = 0.003  # learning rate
MIN_LR = 0.003
DEPTH = 4

def f(x):
    if x:
        y = 1
        return y
    return 0
"""

APPLY = [
    # name, file text, search, replace, expected text or "!" + part of the error
    ("exact", SRC, "DEPTH = 4\n", "DEPTH = 5\n", SRC.replace("DEPTH = 4", "DEPTH = 5")),
    ("exact without newline", SRC, "DEPTH = 4", "DEPTH = 8", SRC.replace("DEPTH = 4", "DEPTH = 8")),
    (
        "whole line wins over substring",
        SRC,
        "LR = 0.003  # learning rate",
        "LR = 0.006  # learning rate",
        SRC.replace("LR = 0.003  #", "LR = 0.006  #"),
    ),
    ("substring in two lines", "A_X = 1\nB_X = 1\n", "_X = 1", "_X = 2", "!matches 2 places"),
    ("same line twice", "X = 1\nX = 1\n", "X = 1\n", "X = 2\n", "!matches 2 places"),
    ("not found", SRC, "DEPTH = 6\n", "DEPTH = 7\n", "!SEARCH text not found (closest line 3: 'DEPTH = 4')"),
    ("trailing whitespace in file", "A = 1   \nB = 2\n", "A = 1\nB = 2\n", "A = 3\nB = 4\n", "A = 3\nB = 4\n"),
    ("trailing whitespace in search", SRC, "DEPTH = 4   \n", "DEPTH = 5\n", SRC.replace("DEPTH = 4", "DEPTH = 5")),
    ("blank lines around search", SRC, "\n\nDEPTH = 4\n\n", "\n\nDEPTH = 5\n\n", SRC.replace("DEPTH = 4", "DEPTH = 5")),
    (
        "different indentation, re-indented",
        SRC,
        "if x:\n    y = 1\n",
        "if x:\n    y = 2\n    z = 3\n",
        SRC.replace("        y = 1\n", "        y = 2\n        z = 3\n"),
    ),
    (
        "over-indented search",
        SRC,
        "            y = 1\n            return y\n",
        "            return 1\n",
        SRC.replace("        y = 1\n        return y\n", "        return 1\n"),
    ),
    (
        "indentation-tolerant but ambiguous",
        "def a():\n    x = 1\ndef b():\n        x = 1\n",
        "  x = 1\n",
        "  x = 2\n",
        "!matches 2 places (lines 2, 4)",
    ),
    ("replace dedents below search", SRC, "  y = 1\n", "z = 1\n", "!cannot be re-indented"),
    ("last line without newline", "A = 1\nB = 2", "B = 2\n", "B = 3\n", "A = 1\nB = 3"),
    ("crlf file", "A = 1\r\nB = 2\r\n", "A = 1\nB = 2\n", "A = 9\nB = 8\n", "A = 9\r\nB = 8\r\n"),
    ("delete lines", SRC, "MIN_LR = 0.003\n", "", SRC.replace("MIN_LR = 0.003\n", "")),
    ("empty search, empty file", "", "", "X = 1\n", "X = 1\n"),
    ("empty search, full file", SRC, "", "X = 1\n", "!SEARCH is empty but the file is not"),
]


@pytest.mark.parametrize("name,text,search,replace,expected", APPLY, ids=[a[0] for a in APPLY])
def test_apply_one(name, text, search, replace, expected):
    edits = [FileEdit("train.py", search, replace)]
    if expected.startswith("!"):
        with pytest.raises(EditError) as e:
            apply_edits({"train.py": text}, edits, ["train.py"], ["prepare.py"])
        assert expected[1:] in str(e.value)
        assert str(e.value).startswith("edit 1 of 1 on train.py: ")
    else:
        assert apply_edits({"train.py": text}, edits, ["train.py"], ["prepare.py"]) == {"train.py": expected}


ACCESS = [
    # edit path, error
    ("prepare.py", "edit 1 of 1 on prepare.py: file is protected"),
    ("other.py", "edit 1 of 1 on other.py: not an editable file (editable: model.py, train.py)"),
]


@pytest.mark.parametrize("path,message", ACCESS)
def test_only_editable_files(path, message):
    with pytest.raises(EditError) as e:
        apply_edits(
            {"train.py": "A = 1\n"}, [FileEdit(path, "A = 1", "A = 2")], ["train.py", "model.py"], ["prepare.py"]
        )
    assert str(e.value) == message and e.value.path == path and e.value.index == 1


def test_several_edits_apply_in_order_and_only_changed_files_return():
    files = {"train.py": "A = 1\nB = 2\n", "model.py": "C = 3\n"}
    edits = [FileEdit("train.py", "A = 1", "A = 10"), FileEdit("./train.py", "A = 10\nB = 2", "A = 11\nB = 2")]
    assert apply_edits(files, edits, ["train.py", "model.py"], []) == {"train.py": "A = 11\nB = 2\n"}
    assert files["train.py"] == "A = 1\nB = 2\n"  # inputs untouched
    assert apply_edits(files, [FileEdit("model.py", "C = 3", "C = 3")], ["model.py"], []) == {}
    with pytest.raises(EditError, match="edit 2 of 2 on train.py: SEARCH text not found"):
        apply_edits(files, [edits[0], FileEdit("train.py", "A = 1\n", "A = 0\n")], ["train.py"], [])


def test_a_new_editable_file_can_be_created():
    assert apply_edits({}, [FileEdit("new.py", "", "X = 1\n")], ["new.py"], []) == {"new.py": "X = 1\n"}


BLOCKS = """\
I will raise the learning rate.

train.py
```python
<<<<<<< SEARCH
LR = 0.003
=======
LR = 0.006
>>>>>>> REPLACE
```

<<<<<<< SEARCH
DEPTH = 4

=======
>>>>>>> REPLACE

**model.py**:
<<<<<<< SEARCH
=======
X = 1
>>>>>>> REPLACE
"""


def test_parse_search_replace():
    assert parse_search_replace(BLOCKS) == [
        FileEdit("train.py", "LR = 0.003\n", "LR = 0.006\n"),
        FileEdit("train.py", "DEPTH = 4\n\n", ""),
        FileEdit("model.py", "", "X = 1\n"),
    ]
    assert parse_search_replace("no blocks here") == []


BAD_BLOCKS = [
    ("<<<<<<< SEARCH\na\n=======\nb\n>>>>>>> REPLACE\n", "block 1: no file name"),
    ("train.py\n<<<<<<< SEARCH\na\n>>>>>>> REPLACE\n", "block 1 (train.py): no ======= line"),
    ("train.py\n<<<<<<< SEARCH\na\n=======\nb\n", "block 1 (train.py): no >>>>>>> REPLACE line"),
    ("Change this:\n<<<<<<< SEARCH\na\n=======\nb\n>>>>>>> REPLACE\n", "block 1: no file name"),
]


@pytest.mark.parametrize("text,message", BAD_BLOCKS)
def test_parse_errors(text, message):
    with pytest.raises(EditError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_search_replace(text)


def udiff(path: str, removed: list[str], added: list[str]) -> str:
    body = "".join(f"-{x}\n" for x in removed) + "".join(f"+{x}\n" for x in added)
    return (
        f"diff --git a/{path} b/{path}\nindex 1..2 100644\n--- a/{path}\n+++ b/{path}\n"
        f"@@ -1,{len(removed) + 1} +1,{len(added) + 1} @@\n context\n{body}"
    )


SUMMARIES = [
    ("", "no changes"),
    (udiff("train.py", ["LR = 0.003  # lr"], ["LR = 0.004  # lr"]), "train.py: LR 0.003 -> 0.004"),
    (
        udiff("train.py", ["LR = 3e-4", "DEPTH = 4"], ["LR = 6e-4", "DEPTH = 5"]),
        "train.py: LR 3e-4 -> 6e-4, DEPTH 4 -> 5",
    ),
    (udiff("train.py", ["x = 1"], ["y = 1", "z = 2", "w = 3"]), "train.py: +3 -1 lines"),
    (udiff("train.py", ["--- not a header", "LR = 1"], ["LR = 2", "--- still not"]), "train.py: +2 -2 lines"),
    (udiff("a.py", ["A = 1"], ["A = 2"]) + udiff("b.py", [], ["import os"]), "a.py: A 1 -> 2; b.py: +1 -0 lines"),
    ("--- /dev/null\n+++ b/new.py\n@@ -0,0 +1 @@\n+X = 1\n", "new.py: +1 -0 lines"),
]


@pytest.mark.parametrize("diff,summary", SUMMARIES)
def test_diff_summary(diff, summary):
    assert diff_summary(diff) == summary


FRAGMENTS = [
    # file, search, replace, expected
    ("LR = 0.003  # lr\nMIN_LR = 0.003\n", "LR = 0.003", "LR = 0.004", "LR = 0.004  # lr\nMIN_LR = 0.003\n"),
    ("A = 0.5\nB = 0.5\n", "0.5", "0.6", "!matches 2 places"),
    ("    x = 1\n", "x = 1\n", "x = 1\ny = 2\n", "    x = 1\n    y = 2\n"),  # re-indented, not mid-line
]


@pytest.mark.parametrize("text,search,replace,expected", FRAGMENTS)
def test_fragments(text, search, replace, expected):
    edits = [FileEdit("t.py", search, replace)]
    if expected.startswith("!"):
        with pytest.raises(EditError, match=expected[1:]):
            apply_edits({"t.py": text}, edits, ["t.py"], [])
    else:
        assert apply_edits({"t.py": text}, edits, ["t.py"], []) == {"t.py": expected}
