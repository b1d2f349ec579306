"""Helpers shared by the test modules, so that no test module imports another (tests/test_layers.py checks).

tests/ is on sys.path (pytest's default rootdir-relative "prepend" import mode puts the folder of
conftest.py and of every test module there), so a test imports `from support.workspace import ...`.
- workspace: the stand-in train.py, a committed workspace around it, git, TOML merging, `python train.py`.
- summary: autoresearch's summary block, the one copy both sides of the trainer contract compare to.
- fake_anthropic: a fake Messages API over real HTTP, and its `fake_anthropic` fixture.
- layers: the import checker behind tests/test_layers.py (ast only, nothing imported).
"""
