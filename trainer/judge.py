"""
The judge of a Nightlab experiment. DO NOT CHANGE: fixed like prepare.py (the agent edits train.py only).

Training (train.py through prepare.py's Harness, NIGHTLAB_WEIGHTS set) saves the model's weights and
exits; the metric comes from here, a process of its own, started fresh by Nightlab's runner in a folder
holding the experiment's COMMITTED files (not the worktree as training left it):

    python judge.py --weights RUN/model.pt --out RUN/judge/result.json

It captures what the metric depends on (the modules below, prepare.py's own functions, torch's and
numpy's, the builtins) BEFORE importing any editable code, imports train.py as a module (main() does
not run), and reports tampering when any of it changed afterwards or during a forward pass. It
rebuilds the model with train.py's `build_model(vocab_size, seq_len)`, loads the weights (strict,
weights only) and checks, in order: logits of the right shape; causality (at positions of rows chosen
secretly per run, from os.urandom, the logits at and before a position are unchanged when every token
after it is changed); val_bpb with prepare.py's `val_rows` and `evaluate_bpb`, the very code path of a
standalone run (bf16 autocast on CUDA); a finite, positive result. It writes one JSON object to
--out (the one path it may write) and exits 0, whatever the verdict; a crash of the judge itself is
what a non-zero exit means.

Needs torch and numpy. Imports nothing from nightlab.
"""

from __future__ import annotations

import argparse
import builtins
import contextlib
import json
import math
import os
import pathlib
import random
import sys
import threading
import time
import types
from pathlib import Path

import numpy as np
import prepare
import prepare_data
import torch
import torch.nn as nn
import torch.nn.functional as F

CAUSAL_ROWS = 4  # rows probed for looking ahead
CAUSAL_TOLERANCE = {"cpu": 1e-5, "cuda": 1e-2, "mps": 1e-3}  # |change| allowed, relative to 1 + max |logit|

# What the metric depends on, and whether a name ADDED to it later is tampering too (a class's
# methods shadowed, a constant of the harness added): for packages, submodules appear on import.
WATCHED = [
    ("torch", torch, False),
    ("torch.nn.functional", F, True),
    ("torch.Tensor", torch.Tensor, True),
    ("torch.nn.Module", nn.Module, True),
    ("torch._C._nn", torch._C._nn, True),
    ("torch._C._VariableFunctions", torch._C._VariableFunctions, True),
    ("numpy", np, False),
    ("math", math, True),
    ("builtins", builtins, True),
    ("contextlib", contextlib, True),
    ("json", json, True),
    ("pathlib.Path", pathlib.Path, True),
    ("threading", threading, True),
    ("prepare", prepare, True),
    ("prepare_data", prepare_data, True),
]


class Invalid(Exception):
    """The run's result cannot stand; the message says why, in words."""


# ---------------------------------------------------------------------------
# Tampering: a snapshot of every watched name (and of the functions' code) before train.py runs


def watched() -> list[tuple[str, object, bool]]:
    return [*WATCHED, ("judge", sys.modules[__name__], True)]  # this module too: its own functions


def snapshot() -> dict[str, object]:
    snap: dict[str, object] = {"threads": threading.active_count()}  # an int: compared by value below
    for owner_name, owner, _ in watched():
        # A C type without __dict__: its public names (a dunder read gives a new wrapper object each time)
        public = {n: getattr(owner, n) for n in dir(owner) if n[:2] != "__"} if not hasattr(owner, "__dict__") else {}
        names = vars(owner) if hasattr(owner, "__dict__") else public
        for name, value in list(names.items()):
            snap[f"{owner_name}.{name}"] = value
            if isinstance(value, types.FunctionType):  # a body swapped in place keeps the function's identity
                snap[f"{owner_name}.{name}.__code__"] = value.__code__
                snap[f"{owner_name}.{name}.__defaults__"] = value.__defaults__
    return snap


def tampered(before: dict[str, object], _snapshot=snapshot) -> list[str]:
    """What changed since `before`, as "replaced torch.nn.functional.cross_entropy" phrases. (The
    defaults hold this module's functions as they were: they are watched, with their code, too.)"""
    now = _snapshot()
    changes = ["started a thread"] if now.pop("threads") != before["threads"] else []
    replaced = [k for k, v in before.items() if k != "threads" and (k not in now or now[k] is not v)]
    whole = set(replaced)  # a function replaced whole: its old code and defaults are not news
    changes += [f"replaced {k}" for k in replaced if k.rsplit(".", 1)[0] not in whole]
    strict = tuple(f"{name}." for name, _, added_counts in watched() if added_counts)
    changes += [f"added {key}" for key in now if key not in before and key.startswith(strict)]
    return changes


def guard(before: dict[str, object], when: str, _tampered=tampered) -> None:
    changes = _tampered(before)
    if changes:
        more = f" (and {len(changes) - 3} more)" if len(changes) > 3 else ""
        raise Invalid(f"train.py {', '.join(changes[:3])}{more} {when}")


class Guarded:
    """The model as evaluate_bpb sees it: after every forward pass the watched names are checked, so a
    forward that patches the metric's functions is caught before they compute anything."""

    def __init__(self, model: nn.Module, before: dict[str, object]):
        self.model, self.before = model, before

    @property
    def training(self) -> bool:
        return self.model.training

    def eval(self):
        self.model.eval()
        return self

    def train(self, mode: bool = True):
        self.model.train(mode)
        return self

    def __call__(self, x):
        out = self.model(x)
        guard(self.before, "during a forward pass")
        return out


# ---------------------------------------------------------------------------
# The checks


def logits_of(out) -> torch.Tensor:
    return out[0] if isinstance(out, (tuple, list)) else out


def check_shape(model, x: torch.Tensor, vocab_size: int, autocast) -> None:
    with torch.no_grad(), autocast():
        logits = logits_of(model(x))
    if not torch.is_tensor(logits) or tuple(logits.shape) != (x.size(0), x.size(1), vocab_size):
        shape = tuple(logits.shape) if torch.is_tensor(logits) else type(logits).__name__
        raise Invalid(f"the model's logits are {shape}, not (batch, {x.size(1)}, {vocab_size})")


def check_causal(model, rows: np.ndarray, vocab_size: int, device, autocast, rng: random.Random) -> int:
    """Changes every token after a secret position of each probed row; the logits at and before it must
    not move. Returns how many positions were probed."""
    picks = sorted(rng.sample(range(len(rows)), min(CAUSAL_ROWS, len(rows))))
    x = torch.as_tensor(np.asarray(rows[picks, :-1]), device=device).long()
    altered = x.clone()
    positions = [rng.randrange(0, x.size(1) - 1) for _ in picks]
    for i, p in enumerate(positions):  # every later token becomes another token
        shift = torch.tensor([rng.randrange(1, vocab_size) for _ in range(x.size(1) - 1 - p)], device=device)
        altered[i, p + 1 :] = (x[i, p + 1 :] + shift) % vocab_size
    with torch.no_grad(), autocast():
        a, b = logits_of(model(x)).float(), logits_of(model(altered)).float()
    tolerance = CAUSAL_TOLERANCE.get(torch.device(device).type, 1e-3)
    for i, p in enumerate(positions):
        before_a, before_b = a[i, : p + 1], b[i, : p + 1]
        allowed = tolerance * (1.0 + float(before_a.abs().max()))
        moved = ((before_a - before_b).abs().amax(dim=-1) > allowed).nonzero()
        if len(moved):
            first = int(moved[0])
            raise Invalid(
                f"the model looks ahead (logits at position {first} changed when the tokens after position {p} "
                f"changed, by {float((before_a[first] - before_b[first]).abs().max()):.3g})"
            )
    return len(positions)


def measure(args, before: dict[str, object], result: dict) -> None:
    """Everything after the snapshot: import train.py, rebuild, load, check, evaluate (into `result`)."""
    device_type = os.environ.get("NIGHTLAB_DEVICE") or prepare.detect_device()
    device = torch.device(device_type)
    folder = prepare.prepare(tokenizer=prepare.default_tokenizer_name(device_type))
    meta = json.loads((folder / "meta.json").read_text())
    vocab_size, bos_id = int(meta["vocab_size"]), int(meta["bos_id"])
    rows = prepare.val_rows(folder, device_type, bos_id)
    token_bytes = np.load(folder / "token_bytes.npy")
    seq_len = rows.shape[1] - 1
    try:
        import train
    except Exception as exc:
        raise Invalid(f"train.py could not be imported: {type(exc).__name__}: {exc}") from exc
    guard(before, "when imported")
    if not callable(getattr(train, "build_model", None)):
        raise Invalid("train.py has no build_model(vocab_size, seq_len): the judge rebuilds the model with it")
    model = train.build_model(vocab_size, seq_len)
    guard(before, "in build_model")
    if not isinstance(model, nn.Module):
        raise Invalid(f"build_model returned a {type(model).__name__}, not a torch.nn.Module")
    try:
        state = torch.load(args.weights, map_location="cpu", weights_only=True)
    except FileNotFoundError as exc:
        raise Invalid(f"training saved no weights ({args.weights} is missing)") from exc
    except Exception as exc:
        raise Invalid(f"the saved weights could not be read: {type(exc).__name__}: {exc}") from exc
    if isinstance(state, dict):  # a torch.compile'd model's names carry a prefix
        state = {k.removeprefix("_orig_mod."): v for k, v in state.items()}
    try:
        model.load_state_dict(state, strict=True)
    except Exception as exc:
        raise Invalid(f"the saved weights do not fit build_model's model: {str(exc).splitlines()[0]}") from exc
    model.to(device).eval()
    guarded = Guarded(model, before)

    def autocast():
        return torch.autocast("cuda", dtype=torch.bfloat16) if device_type == "cuda" else contextlib.nullcontext()

    probe = torch.as_tensor(np.asarray(rows[:2, :-1]), device=device).long()
    check_shape(guarded, probe, vocab_size, autocast)
    result["checks"]["shape"] = "passed"
    rng = random.Random(int.from_bytes(os.urandom(8), "little"))  # secret per run: never the run's seed
    probed = check_causal(guarded, rows, vocab_size, device, autocast, rng)
    result["checks"]["causality"] = f"passed ({probed} positions)"
    t_eval = time.time()
    val_bpb = prepare.evaluate_bpb(guarded, rows, token_bytes, device, autocast)
    result["eval_seconds"] = round(time.time() - t_eval, 3)
    guard(before, "during the evaluation")
    result["checks"]["tampering"] = "passed"
    if not math.isfinite(val_bpb) or val_bpb <= 0:
        raise Invalid(f"val_bpb {val_bpb} is not a positive finite number")
    result["checks"]["finite"] = "passed"
    result["val_bpb"] = val_bpb


def main(argv=None, _open=open, _exit=os._exit, _dumps=json.dumps) -> None:
    before = snapshot()  # first, before anything editable runs
    parser = argparse.ArgumentParser(description="Measure the weights a Nightlab training run saved.")
    parser.add_argument("--weights", required=True, help="the state_dict training saved (NIGHTLAB_WEIGHTS)")
    parser.add_argument("--out", required=True, help="where the JSON result goes")
    args = parser.parse_args(argv)
    t0 = time.time()
    result: dict = {"ok": False, "val_bpb": None, "reason": "", "checks": {}, "eval_seconds": 0.0}
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # train.py from the committed files beside this one
    try:
        measure(args, before, result)
        guard(before, "before the result was written")
        result["ok"] = True
    except Invalid as exc:
        result = {**result, "ok": False, "val_bpb": None, "reason": f"invalid: {exc}"}
    result["judge_seconds"] = round(time.time() - t0, 3)
    text = _dumps(result, indent=1)
    with _open(args.out, "w", encoding="utf-8") as out:
        out.write(text + "\n")
    print(text, flush=True)
    # At once: no atexit hook, finaliser or thread of train.py's gets to run after the result is written.
    _exit(0)


if __name__ == "__main__":
    main()
