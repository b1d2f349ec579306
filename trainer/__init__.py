"""nightlab.trainer: the default experiment template (prepare.py and prepare_data.py, judge.py,
train.py, program.md, nightlab.toml).

The template files run in a workspace with only torch, numpy and tokenizers installed;
they import nothing from nightlab. This package only locates and copies them (see workspace.py).
"""

from pathlib import Path

TEMPLATE_DIR = Path(__file__).resolve().parent
TEMPLATE_FILES = ("prepare.py", "prepare_data.py", "judge.py", "train.py", "program.md", "nightlab.toml")
