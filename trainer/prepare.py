"""
The fixed harness of a Nightlab experiment. DO NOT CHANGE: the agent edits train.py only.

It owns everything the metric depends on: the corpus and its train/val split, the tokenizer, the
data cache, the loader, the budget, `evaluate_bpb` and the summary block. train.py builds a model
and trains it through `Harness`; the harness measures it. The data side (corpus, tokenizers, cache,
loader) is in prepare_data.py, as fixed as this file; its names are importable from here.
Under Nightlab (NIGHTLAB_WEIGHTS set) training only saves its weights: judge.py, fixed too, measures
them in a process of its own, with the same `val_rows` and `evaluate_bpb`.

    python prepare.py                      # build the cache for the built-in corpus (stdlib sources)
    python prepare.py --data PATH          # a folder of text files, .jsonl (a "text" field) or .parquet
    python prepare.py --tokenizer bpe      # byte (default on CPU) | bpe (vocab 8192, default on CUDA)

Needs torch and numpy (and `tokenizers` for BPE, `pyarrow` for parquet). Imports nothing from nightlab.
"""
from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

# The data side (corpus, split, tokenizers, cache, loader, the summary's format) lives in prepare_data.py,
# fixed like this file; its names are importable from here.
from prepare_data import (  # noqa: F401  (re-exported: prepare's names, as train.py and tools know them)
    BPE_TRAIN_BYTES,
    BPE_VOCAB_SIZE,
    SPECIAL_TOKENS,
    SUMMARY_FORMATS,
    VAL_PERCENT,
    BPETokenizer,
    ByteTokenizer,
    _byte_to_unicode,
    batches,
    build_cache,
    cache_root,
    corpus_key,
    default_tokenizer_name,
    format_summary,
    in_val,
    iter_documents,
    list_sources,
    load_tokenizer,
    make_rows,
    stdlib_files,
)

# ---------------------------------------------------------------------------
# Constants (DO NOT CHANGE: every result in the ledger was measured with them)

TIME_BUDGET_CUDA = 300          # seconds of training wall clock on a GPU (autoresearch's budget)
TIME_BUDGET_CPU = 60            # ... on the CPU or MPS
WARMUP_STEPS = 10               # the first steps (compilation, allocator warm-up) are not budgeted
SEQ_LEN_CUDA = 2048             # context length with the BPE tokenizer
SEQ_LEN_CPU = 256               # context length with the byte tokenizer
EVAL_TOKENS_CUDA = 40 * 524288  # validation tokens scored (capped at the size of the val split)
EVAL_TOKENS_CPU = 2**17
EVAL_BATCH_ROWS = 16            # rows per eval forward pass; fixed here so train.py cannot change it
DATA_SOURCE = "stdlib"          # "stdlib" (this Python's own sources) or a path; NIGHTLAB_DATA overrides
DIVERGENCE_LOSS = 100.0         # a training loss above this (or NaN) is a FAIL

# Peak dense bf16 FLOP/s of common accelerators, for MFU. None on the CPU.
PEAK_FLOPS = [
    ("GB200", 2.5e15), ("B200", 2.25e15), ("B100", 1.75e15), ("H200", 989.5e12),
    ("H100 NVL", 835e12), ("H100 PCIe", 756e12), ("H100", 989.5e12), ("H800", 989.5e12),
    ("GH200", 989.5e12), ("A100", 312e12), ("A800", 312e12), ("L40S", 362.05e12),
    ("L40", 181e12), ("L4", 121e12), ("A6000", 154.8e12), ("A40", 149.7e12), ("A10", 125e12),
    ("RTX 6000 Ada", 364.2e12), ("RTX 5090", 209.5e12), ("RTX 4090", 165.2e12),
    ("RTX 4080", 97.5e12), ("RTX 3090", 71e12), ("RTX 3080", 59.5e12), ("V100", 125e12),
    ("T4", 65e12), ("MI300X", 1307e12), ("MI250X", 383e12),
]


def prepare(source: str | None = None, tokenizer: str = "byte") -> Path:
    """Build the data cache once (atomic, locked against concurrent builders) and return its folder.
    Each document is stored as [BOS] + tokens; the training path only slices these arrays."""
    return build_cache(source or os.environ.get("NIGHTLAB_DATA") or DATA_SOURCE, tokenizer)


# ---------------------------------------------------------------------------
# The metric


def bpb_sums(logits: torch.Tensor, targets: torch.Tensor, token_bytes: torch.Tensor) -> tuple[float, int]:
    """(sum of nats, sum of raw bytes) over targets that stand for at least one byte."""
    nats = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1), reduction="none")
    nbytes = token_bytes[targets.reshape(-1)]
    mask = nbytes > 0
    return float((nats * mask).sum().item()), int(nbytes.sum().item())


def bits_per_byte(total_nats: float, total_bytes: int) -> float:
    return total_nats / (math.log(2) * total_bytes)


def eval_rows(val_tokens: np.ndarray, seq_len: int, eval_tokens: int, bos_id: int) -> np.ndarray:
    """The fixed validation set: consecutive windows of the val split, each led by BOS."""
    n = min(eval_tokens // seq_len, (len(val_tokens) - 1) // seq_len)
    return make_rows(val_tokens, np.arange(n, dtype=np.int64) * seq_len, seq_len, bos_id)


def val_rows(folder: Path, device_type: str, bos_id: int) -> np.ndarray:
    """The rows the metric is computed on, for a device: the harness's and the judge's, one definition."""
    cuda = device_type == "cuda"
    val = np.load(folder / "val.npy", mmap_mode="r")
    return eval_rows(val, SEQ_LEN_CUDA if cuda else SEQ_LEN_CPU, EVAL_TOKENS_CUDA if cuda else EVAL_TOKENS_CPU, bos_id)


@torch.no_grad()
def evaluate_bpb(model, rows: np.ndarray, token_bytes: np.ndarray, device, autocast=None) -> float:
    # autocast: None or a callable returning a fresh context manager (bf16 on CUDA)
    """Bits per byte of `model` on `rows`. The loss is computed here, from the logits the model
    returns (the first element when it returns a tuple), never from anything train.py computed."""
    was_training = model.training
    model.eval()
    dev = torch.device(device)
    tb = torch.as_tensor(token_bytes, device=dev)
    total_nats, total_bytes = 0.0, 0
    try:
        for i in range(0, len(rows), EVAL_BATCH_ROWS):
            batch = torch.as_tensor(rows[i : i + EVAL_BATCH_ROWS], device=dev)
            x, y = batch[:, :-1], batch[:, 1:]
            with autocast() if autocast is not None else contextlib.nullcontext():
                out = model(x)
            logits = out[0] if isinstance(out, (tuple, list)) else out
            nats, nbytes = bpb_sums(logits, y, tb)
            total_nats += nats
            total_bytes += nbytes
    finally:
        model.train(was_training)
    return bits_per_byte(total_nats, total_bytes)


# ---------------------------------------------------------------------------
# Budget: training wall clock (autoresearch's semantics) or a fixed number of training tokens


class Budget:
    def __init__(self, mode: str, amount: float):
        if mode not in ("time", "tokens") or not amount >= 0:
            raise SystemExit(f"prepare: bad budget {mode}={amount}")
        self.mode, self.amount = mode, amount
        self.training_seconds = 0.0  # wall clock after the warm-up steps
        self.tokens = 0
        self.steady_tokens = 0  # tokens of the steps inside training_seconds (for throughput and MFU)

    @classmethod
    def from_env(cls, device_type: str) -> Budget:
        tokens = os.environ.get("NIGHTLAB_BUDGET_TOKENS")
        if tokens:
            return cls("tokens", int(float(tokens)))
        seconds = os.environ.get("NIGHTLAB_BUDGET_SECONDS")
        default = TIME_BUDGET_CUDA if device_type == "cuda" else TIME_BUDGET_CPU
        return cls("time", float(seconds) if seconds else default)

    def update(self, step: int, dt: float, tokens: int) -> None:
        if step > WARMUP_STEPS:
            self.training_seconds += dt
            self.steady_tokens += tokens
        self.tokens += tokens

    @property
    def progress(self) -> float:
        if self.amount == 0:
            return 1.0
        used = self.training_seconds if self.mode == "time" else self.tokens
        return min(used / self.amount, 1.0)

    def done(self, step: int) -> bool:
        if self.mode == "tokens":
            return self.tokens >= self.amount
        return self.amount == 0 or (step > WARMUP_STEPS and self.training_seconds >= self.amount)


# ---------------------------------------------------------------------------
# The harness train.py drives: device, data, budget, step lines, events, and the final summary


def detect_device() -> str:
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def peak_flops(device_type: str) -> float | None:
    if device_type != "cuda":
        return None
    name = torch.cuda.get_device_name()
    for key, flops in PEAK_FLOPS:
        if key.lower() in name.lower():
            return flops
    return None


def peak_memory_mb(device_type: str) -> float:
    if device_type == "cuda":
        return torch.cuda.max_memory_allocated() / 1024 / 1024
    try:
        import resource

        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return rss / 1024 / 1024 if sys.platform == "darwin" else rss / 1024
    except ImportError:
        return 0.0


class Harness:
    """Everything train.py needs from the fixed side. Typical use:

        h = Harness()
        model = GPT(vocab_size=h.vocab_size, seq_len=h.seq_len).to(h.device)
        h.start(num_params=..., depth=..., flops_per_token=...)
        for x, y in h.batches(batch_size):   # ... forward, backward, optimizer step ...
            h.step(loss, lrm=..., tokens=...)  # step line, events, budget, NaN check
            if h.done: break
        h.finish(model)                      # evaluate_bpb (or, judged, save the weights) and the summary
    """

    def __init__(self, device: str | None = None, tokenizer: str | None = None):
        self.t0 = time.time()
        self.device_type = device or os.environ.get("NIGHTLAB_DEVICE") or detect_device()
        self.device = torch.device(self.device_type)
        self.seed = int(os.environ.get("NIGHTLAB_SEED", "42"))
        torch.manual_seed(self.seed)
        np.random.seed(self.seed)
        if self.device_type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        self.folder = prepare(tokenizer=tokenizer or default_tokenizer_name(self.device_type))
        self.meta = json.loads((self.folder / "meta.json").read_text())
        self.vocab_size = int(self.meta["vocab_size"])
        self.bos_id = int(self.meta["bos_id"])
        self.token_bytes = np.load(self.folder / "token_bytes.npy")
        self.train_tokens = np.load(self.folder / "train.npy", mmap_mode="r")
        # Judged (Nightlab sets NIGHTLAB_WEIGHTS), training never reads the val split: it is hidden from it.
        self.weights = os.environ.get("NIGHTLAB_WEIGHTS") or None
        self.seq_len = SEQ_LEN_CUDA if self.device_type == "cuda" else SEQ_LEN_CPU
        self.budget = Budget.from_env(self.device_type)
        self.peak_flops = peak_flops(self.device_type)
        events = os.environ.get("NIGHTLAB_EVENTS")
        self._events = open(events, "a", encoding="utf-8") if events else None
        self.step_count = 0
        self.flops_per_token = 0.0
        self.num_params = 0
        self.depth = 0
        self._last: float | None = None
        self._t_train0: float | None = None
        self.smooth_loss: float | None = None
        self.startup_seconds = 0.0
        self._loaders: list = []  # batches() generators: their threads are stopped and joined before exit
        atexit.register(self.close)

    def autocast(self):
        if self.device_type == "cuda":
            return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    @property
    def done(self) -> bool:
        return self.budget.done(self.step_count)

    @property
    def progress(self) -> float:
        return self.budget.progress

    def batches(self, batch_size: int, seq_len: int | None = None):
        seq_len = min(seq_len or self.seq_len, self.seq_len)
        loader = batches(self.train_tokens, batch_size, seq_len, self.bos_id, self.seed, self.device)
        self._loaders.append(loader)
        return loader

    def close(self) -> None:
        """Stop every loader's thread and join it (finish() does, and so does the exit): a thread still in
        torch's pin_memory when the interpreter shuts down aborts the process after a complete result."""
        while self._loaders:
            self._loaders.pop().close()

    def event(self, kind: str, **fields) -> None:
        if self._events is not None:
            self._events.write(json.dumps({"event": kind, **fields}) + "\n")
            self._events.flush()

    def start(self, num_params: int, depth: int, flops_per_token: float) -> None:
        self.num_params, self.depth, self.flops_per_token = num_params, depth, flops_per_token
        self.startup_seconds = time.time() - self.t0
        self.event("start", device=self.device_type, budget_mode=self.budget.mode, budget=self.budget.amount,
                   num_params_M=round(num_params / 1e6, 3), seed=self.seed, tokenizer=self.meta["tokenizer"])
        self._last = time.time()

    def _sync(self) -> None:
        if self.device_type == "cuda":
            torch.cuda.synchronize()
        elif self.device_type == "mps":
            torch.mps.synchronize()

    def step(self, loss, lrm: float, tokens: int) -> None:
        """Call once per optimizer step with the step's training loss (tensor or float)."""
        loss_f = float(loss.item() if torch.is_tensor(loss) else loss)  # .item() also syncs
        self._sync()
        now = time.time()
        dt = now - (self._last or now)
        self._last = now
        self.step_count += 1
        step = self.step_count
        if not math.isfinite(loss_f) or loss_f > DIVERGENCE_LOSS:
            print(f"\nstep {step:05d}: loss {loss_f} is not finite or diverged")
            print("FAIL", flush=True)
            self.event("fail", reason="nan" if not math.isfinite(loss_f) else "divergence", step=step)
            sys.exit(1)
        self.budget.update(step, dt, tokens)
        tok_per_s = tokens / dt if dt > 0 else 0.0
        mfu = 100 * self.flops_per_token * tok_per_s / self.peak_flops if self.peak_flops else 0.0
        beta = 0.9
        self.smooth_loss = loss_f if self.smooth_loss is None else beta * self.smooth_loss + (1 - beta) * loss_f
        pct = 100 * self.progress
        if self.budget.mode == "time":
            remaining = f"{max(0.0, self.budget.amount - self.budget.training_seconds):.0f}s"
        else:
            remaining = f"{max(0, self.budget.amount - self.budget.tokens):,} tok"
        epoch = self.budget.tokens // max(1, len(self.train_tokens))
        print(f"\rstep {step:05d} ({pct:.1f}%) | loss: {loss_f:.6f} | lrm: {lrm:.2f} | dt: {dt * 1000:.0f}ms | "
              f"tok/sec: {int(tok_per_s):,} | mfu: {mfu:.1f}% | epoch: {epoch} | remaining: {remaining}    ",
              end="", flush=True)
        self.event("step", step=step, elapsed_s=round(self.budget.training_seconds, 3), loss=round(loss_f, 6),
                   tok_per_s=round(tok_per_s, 1), mfu=round(mfu, 2), lr=round(lrm, 6),
                   progress=round(self.progress, 4))

    def finish(self, model) -> float | None:
        """Evaluate the model with the harness's own metric and print the summary block; judged, save
        its weights for judge.py instead (the block, without val_bpb, is then only informational)."""
        self.close()  # training is over: the loader's thread would only compete with the evaluation
        print(flush=True)
        t_eval = time.time()
        val_bpb = None
        if self.weights:
            torch.save(model.state_dict(), self.weights)
        else:
            rows = val_rows(self.folder, self.device_type, self.bos_id)
            val_bpb = evaluate_bpb(model, rows, self.token_bytes, self.device, self.autocast)
        eval_seconds = time.time() - t_eval
        training_seconds = self.budget.training_seconds
        total_seconds = time.time() - self.t0
        memory = peak_memory_mb(self.device_type)
        steady = self.budget.steady_tokens / training_seconds if training_seconds > 0 else 0.0
        mfu = 100 * self.flops_per_token * steady / self.peak_flops if self.peak_flops else 0.0
        if val_bpb is not None and not math.isfinite(val_bpb):
            print("FAIL", flush=True)
            self.event("fail", reason="nan", step=self.step_count)
            sys.exit(1)
        summary = {
            "val_bpb": val_bpb, "training_seconds": training_seconds, "total_seconds": total_seconds,
            "peak_vram_mb": memory, "mfu_percent": mfu, "total_tokens_M": self.budget.tokens / 1e6,
            "num_steps": self.step_count, "num_params_M": self.num_params / 1e6, "depth": self.depth,
        }
        if val_bpb is None:
            del summary["val_bpb"]
        print(format_summary(summary), flush=True)
        self.event("summary", **summary, tokens=self.budget.tokens, startup_s=round(self.startup_seconds, 3),
                   training_s=round(training_seconds, 3), eval_s=round(eval_seconds, 3),
                   total_s=round(total_seconds, 3), peak_mem_mb=round(memory, 1))
        return val_bpb


# ---------------------------------------------------------------------------


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Build the data cache of a Nightlab experiment.")
    parser.add_argument("--data", help="stdlib (default), a folder of text files, .jsonl or .parquet files")
    parser.add_argument("--tokenizer", choices=["byte", "bpe"], help="default: bpe on CUDA, byte elsewhere")
    args = parser.parse_args(argv)
    tokenizer = args.tokenizer or default_tokenizer_name(detect_device())
    folder = prepare(args.data, tokenizer)
    meta = json.loads((folder / "meta.json").read_text())
    print(f"cache: {folder}\ntrain tokens: {meta['train_tokens']:,}\nval tokens: {meta['val_tokens']:,}")
    if args.data and args.data != DATA_SOURCE:
        print(f"to train on it, run with NIGHTLAB_DATA={args.data} "
              "(or set DATA_SOURCE in prepare.py before the loop starts)")


if __name__ == "__main__":
    main()
