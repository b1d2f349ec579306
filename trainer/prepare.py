"""
The fixed harness of a Nightlab experiment. DO NOT CHANGE: the agent edits train.py only.

It owns everything the metric depends on: the corpus and its train/val split, the tokenizer, the
data cache, the loader, the budget, `evaluate_bpb` and the summary block. train.py builds a model
and trains it through `Harness`; the harness measures it.

    python prepare.py                      # build the cache for the built-in corpus (stdlib sources)
    python prepare.py --data PATH          # a folder of text files, .jsonl (a "text" field) or .parquet
    python prepare.py --tokenizer bpe      # byte (default on CPU) | bpe (vocab 8192, default on CUDA)

Needs torch and numpy (and `tokenizers` for BPE, `pyarrow` for parquet). Imports nothing from nightlab.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import queue
import sys
import sysconfig
import threading
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

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
BPE_VOCAB_SIZE = 8192
BPE_TRAIN_BYTES = 400_000_000   # the BPE tokenizer is trained on at most this much of the train split
VAL_PERCENT = 5                 # share of files (or documents) in the val split, by hash
SPECIAL_TOKENS = ["<|bos|>", "<|reserved_1|>", "<|reserved_2|>", "<|reserved_3|>"]
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


def cache_root() -> Path:
    return Path(os.environ.get("NIGHTLAB_CACHE") or Path.home() / ".cache" / "nightlab")


def _progress(msg: str, end: str = "\r") -> None:
    print(f"prepare: {msg}", end=end, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# Corpus: documents and a deterministic train/val split

_SKIP_DIRS = {"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__"}


def in_val(key: str) -> bool:
    """The split is a pure function of a stable key (a relative path, or file + index)."""
    h = int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big")
    return h % 100 < VAL_PERCENT


def stdlib_files() -> tuple[Path, list[str]]:
    root = Path(sysconfig.get_paths()["stdlib"])
    rels = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS)
        for name in sorted(filenames):
            if name.endswith(".py"):
                rels.append(os.path.relpath(os.path.join(dirpath, name), root).replace(os.sep, "/"))
    return root, sorted(rels)


def _text_files(folder: Path) -> list[str]:
    exts = {".txt", ".md", ".py", ".rst", ".text"}
    return sorted(
        p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and p.suffix in exts
    )


def _read_jsonl(path: Path):
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f):
            if line.strip():
                yield i, json.loads(line)["text"]


def _read_parquet(path: Path):
    import pyarrow.parquet as pq  # only needed for parquet corpora

    i = 0
    for batch in pq.ParquetFile(path).iter_batches(columns=["text"]):
        for text in batch.column(0).to_pylist():
            yield i, text or ""
            i += 1


def list_sources(source: str) -> tuple[str, list[tuple[Path, str]]]:
    """Resolve DATA_SOURCE to (kind, [(file, relative name)]). kind: stdlib|text|jsonl|parquet."""
    if source == "stdlib":
        root, rels = stdlib_files()
        return "stdlib", [(root / r, r) for r in rels]
    path = Path(source).expanduser().resolve()
    if not path.exists():
        raise SystemExit(f"prepare: data source {path} does not exist")
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for kind, ext in (("parquet", ".parquet"), ("jsonl", ".jsonl")):
        found = [f for f in files if f.suffix == ext]
        if found:
            base = path if path.is_dir() else path.parent
            return kind, [(f, f.relative_to(base).as_posix()) for f in found]
    if path.is_file():
        return "text", [(path, path.name)]
    return "text", [(path / r, r) for r in _text_files(path)]


def iter_documents(kind: str, files: list[tuple[Path, str]]):
    """Yield (split, text). Files of text split by path; jsonl/parquet documents by file + index,
    except autoresearch's climbmix layout (shard_*.parquet), whose last shard is the pinned val shard."""
    pinned_val = None
    if kind == "parquet" and len(files) > 1 and all(Path(r).name.startswith("shard_") for _, r in files):
        pinned_val = max(r for _, r in files)
    for path, rel in files:
        if kind in ("stdlib", "text"):
            text = path.read_bytes().decode("utf-8", errors="replace")
            yield ("val" if in_val(rel) else "train"), text
            continue
        reader = _read_parquet if kind == "parquet" else _read_jsonl
        for i, text in reader(path):
            if pinned_val is not None:
                split = "val" if rel == pinned_val else "train"
            else:
                split = "val" if in_val(f"{rel}#{i}") else "train"
            yield split, text


def corpus_key(source: str, kind: str, files: list[tuple[Path, str]]) -> str:
    h = hashlib.sha256(f"{kind}|{VAL_PERCENT}".encode())
    for path, rel in files:
        st = path.stat()
        h.update(f"{rel}|{st.st_size}|{int(st.st_mtime)}\n".encode())
    name = f"stdlib-py{sys.version_info.major}.{sys.version_info.minor}" if source == "stdlib" else Path(source).name
    return f"{name}-{h.hexdigest()[:10]}"


# ---------------------------------------------------------------------------
# Tokenizers. token_bytes[i] is the number of RAW bytes token i stands for (0 for specials):
# bpb divides by these, so a token that is only part of a UTF-8 character still counts its bytes.


class ByteTokenizer:
    name = "byte"

    def __init__(self):
        self.vocab_size = 256 + len(SPECIAL_TOKENS)
        self.bos_id = 256

    def encode(self, text: str) -> np.ndarray:
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.uint16)

    def decode(self, ids) -> str:
        return bytes(int(i) for i in ids if int(i) < 256).decode("utf-8", errors="replace")

    def token_bytes(self) -> np.ndarray:
        return np.array([1] * 256 + [0] * len(SPECIAL_TOKENS), dtype=np.int32)

    def save(self, folder: Path) -> None:
        pass


def _byte_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from bytes to printable characters, used by byte-level BPE."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    mapping, extra = {}, 0
    for b in range(256):
        if b in keep:
            mapping[b] = chr(b)
        else:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


class BPETokenizer:
    name = "bpe"

    def __init__(self, tok):
        self.tok = tok
        self.vocab_size = tok.get_vocab_size()
        self.bos_id = tok.token_to_id(SPECIAL_TOKENS[0])

    @classmethod
    def train(cls, texts, vocab_size: int = BPE_VOCAB_SIZE) -> "BPETokenizer":
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        )
        tok.train_from_iterator(texts, trainer=trainer)
        return cls(tok)

    @classmethod
    def load(cls, folder: Path) -> "BPETokenizer":
        from tokenizers import Tokenizer

        return cls(Tokenizer.from_file(str(folder / "tokenizer.json")))

    def save(self, folder: Path) -> None:
        self.tok.save(str(folder / "tokenizer.json"))

    def encode(self, text: str) -> np.ndarray:
        return np.array(self.tok.encode(text, add_special_tokens=False).ids, dtype=np.uint16)

    def encode_batch(self, texts: list[str]) -> list[np.ndarray]:
        out = self.tok.encode_batch(texts, add_special_tokens=False)
        return [np.array(e.ids, dtype=np.uint16) for e in out]

    def decode(self, ids) -> str:
        return self.tok.decode([int(i) for i in ids])

    def token_bytes(self) -> np.ndarray:
        inverse = {c: b for b, c in _byte_to_unicode().items()}
        specials = set(SPECIAL_TOKENS)
        out = np.zeros(self.vocab_size, dtype=np.int32)
        for piece, idx in self.tok.get_vocab().items():
            out[idx] = 0 if piece in specials else len(piece)  # each char is exactly one raw byte
            assert piece in specials or all(c in inverse for c in piece), piece
        return out


def default_tokenizer_name(device_type: str) -> str:
    return os.environ.get("NIGHTLAB_TOKENIZER") or ("bpe" if device_type == "cuda" else "byte")


# ---------------------------------------------------------------------------
# The data cache: tokenizer + pre-tokenized train/val arrays, keyed by corpus and tokenizer.
# Each document is stored as [BOS] + tokens; the training path only slices these arrays.


def prepare(source: str | None = None, tokenizer: str = "byte") -> Path:
    """Build the cache once (atomic, locked against concurrent builders) and return its folder."""
    source = source or os.environ.get("NIGHTLAB_DATA") or DATA_SOURCE
    kind, files = list_sources(source)
    if not files:
        raise SystemExit(f"prepare: no documents found in {source}")
    folder = cache_root() / "data" / corpus_key(source, kind, files) / tokenizer
    if (folder / "meta.json").exists():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with _locked(folder.parent / f".{tokenizer}.lock"):
        if (folder / "meta.json").exists():  # another process built it while we waited
            return folder
        tmp = folder.parent / f".{tokenizer}.tmp-{os.getpid()}"
        tmp.mkdir(parents=True, exist_ok=True)
        _build(source, kind, files, tokenizer, tmp, folder)
        os.replace(tmp, folder)
    return folder


@contextlib.contextmanager
def _locked(path: Path):
    try:
        import fcntl
    except ImportError:  # Windows: no concurrent builders expected
        yield
        return
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _build(source: str, kind: str, files, tokenizer: str, out: Path, final: Path) -> None:
    t0 = time.time()
    _progress(f"reading {len(files):,} {kind} files from {source}", end="\n")
    docs = {"train": [], "val": []}
    for split, text in iter_documents(kind, files):
        if text:
            docs[split].append(text)
    if not docs["val"] or not docs["train"]:
        raise SystemExit(f"prepare: the corpus at {source} is too small to split into train and val")
    if tokenizer == "byte":
        tok = ByteTokenizer()
    elif tokenizer == "bpe":
        _progress(f"training a BPE tokenizer (vocab {BPE_VOCAB_SIZE}) on the train split", end="\n")
        budget, sample = BPE_TRAIN_BYTES, []
        for text in docs["train"]:
            sample.append(text)
            budget -= len(text)
            if budget <= 0:
                break
        tok = BPETokenizer.train(sample)
    else:
        raise SystemExit(f"prepare: unknown tokenizer {tokenizer!r} (byte | bpe)")
    tok.save(out)
    meta = {"source": source, "kind": kind, "tokenizer": tokenizer, "vocab_size": tok.vocab_size,
            "bos_id": tok.bos_id, "special_tokens": SPECIAL_TOKENS}
    for split in ("train", "val"):
        texts = docs[split]
        parts, total_bytes = [], 0
        bos = np.array([tok.bos_id], dtype=np.uint16)
        for i in range(0, len(texts), 256):
            chunk = texts[i : i + 256]
            ids = tok.encode_batch(chunk) if hasattr(tok, "encode_batch") else [tok.encode(t) for t in chunk]
            for arr in ids:
                parts.extend((bos, arr))
            total_bytes += sum(len(t.encode("utf-8")) for t in chunk)
            _progress(f"tokenizing {split}: {min(i + 256, len(texts)):,}/{len(texts):,} documents")
        tokens = np.concatenate(parts)
        np.save(out / f"{split}.npy", tokens)
        meta[f"{split}_tokens"] = int(tokens.size)
        meta[f"{split}_documents"] = len(texts)
        meta[f"{split}_bytes"] = total_bytes
    np.save(out / "token_bytes.npy", tok.token_bytes())
    meta["seconds"] = round(time.time() - t0, 1)
    (out / "meta.json").write_text(json.dumps(meta, indent=1))
    _progress(f"cache ready in {meta['seconds']}s: {meta['train_tokens']:,} train / "
              f"{meta['val_tokens']:,} val tokens -> {final}", end="\n")


def load_tokenizer(folder: Path):
    meta = json.loads((folder / "meta.json").read_text())
    return ByteTokenizer() if meta["tokenizer"] == "byte" else BPETokenizer.load(folder)


# ---------------------------------------------------------------------------
# Loader: rows sliced from the memory-mapped arrays, BOS first, produced ahead on a thread.


def make_rows(tokens: np.ndarray, starts: np.ndarray, seq_len: int, bos_id: int) -> np.ndarray:
    """Rows of seq_len + 1 tokens: BOS, then the tokens from each start. Position 0 of every row is
    BOS (an attention sink the model can rely on), so any start point is a valid row."""
    idx = starts[:, None] + np.arange(seq_len, dtype=np.int64)[None, :]
    rows = np.empty((len(starts), seq_len + 1), dtype=np.int64)
    rows[:, 0] = bos_id
    rows[:, 1:] = tokens[idx]
    return rows


def batches(tokens: np.ndarray, batch_size: int, seq_len: int, bos_id: int, seed: int, device,
            prefetch: int = 4):
    """Endless (x, y) batches on `device`. Deterministic for a seed; never blocks on Python packing."""
    dev = torch.device(device)
    pin = dev.type == "cuda"
    q: queue.Queue = queue.Queue(maxsize=prefetch)
    stop = threading.Event()

    def produce():
        rng = np.random.default_rng(seed)
        high = len(tokens) - seq_len
        while not stop.is_set():
            rows = torch.from_numpy(make_rows(tokens, rng.integers(0, high, size=batch_size), seq_len, bos_id))
            if pin:
                rows = rows.pin_memory()
            while not stop.is_set():
                try:
                    q.put(rows, timeout=0.1)
                    break
                except queue.Full:
                    continue

    thread = threading.Thread(target=produce, name="nightlab-loader", daemon=True)
    thread.start()
    try:
        while True:
            rows = q.get().to(dev, non_blocking=pin)
            yield rows[:, :-1], rows[:, 1:]
    finally:
        stop.set()


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
    def from_env(cls, device_type: str) -> "Budget":
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
        h.finish(model)                      # evaluate_bpb and the summary block
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
        self.val_tokens = np.load(self.folder / "val.npy", mmap_mode="r")
        cuda = self.device_type == "cuda"
        self.seq_len = SEQ_LEN_CUDA if cuda else SEQ_LEN_CPU
        self.eval_tokens = EVAL_TOKENS_CUDA if cuda else EVAL_TOKENS_CPU
        self.budget = Budget.from_env(self.device_type)
        self.peak_flops = peak_flops(self.device_type)
        events = os.environ.get("NIGHTLAB_EVENTS")
        self._events = open(events, "a", encoding="utf-8") if events else None
        self.step_count = 0
        self.flops_per_token = 0.0
        self.num_params = 0
        self.depth = 0
        self._last = None
        self._t_train0 = None
        self.smooth_loss = None
        self.startup_seconds = 0.0

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
        return batches(self.train_tokens, batch_size, seq_len, self.bos_id, self.seed, self.device)

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

    def finish(self, model) -> float:
        """Evaluate the model with the harness's own metric and print the summary block."""
        print(flush=True)
        t_eval = time.time()
        rows = eval_rows(self.val_tokens, self.seq_len, self.eval_tokens, self.bos_id)
        val_bpb = evaluate_bpb(model, rows, self.token_bytes, self.device, self.autocast)
        eval_seconds = time.time() - t_eval
        training_seconds = self.budget.training_seconds
        total_seconds = time.time() - self.t0
        memory = peak_memory_mb(self.device_type)
        steady = self.budget.steady_tokens / training_seconds if training_seconds > 0 else 0.0
        mfu = 100 * self.flops_per_token * steady / self.peak_flops if self.peak_flops else 0.0
        if not math.isfinite(val_bpb):
            print("FAIL", flush=True)
            self.event("fail", reason="nan", step=self.step_count)
            sys.exit(1)
        summary = {
            "val_bpb": val_bpb, "training_seconds": training_seconds, "total_seconds": total_seconds,
            "peak_vram_mb": memory, "mfu_percent": mfu, "total_tokens_M": self.budget.tokens / 1e6,
            "num_steps": self.step_count, "num_params_M": self.num_params / 1e6, "depth": self.depth,
        }
        print(format_summary(summary), flush=True)
        self.event("summary", **summary, startup_s=round(self.startup_seconds, 3),
                   training_s=round(training_seconds, 3), eval_s=round(eval_seconds, 3),
                   total_s=round(total_seconds, 3), peak_mem_mb=round(memory, 1))
        return val_bpb


SUMMARY_FORMATS = [
    ("val_bpb", "{:.6f}"), ("training_seconds", "{:.1f}"), ("total_seconds", "{:.1f}"),
    ("peak_vram_mb", "{:.1f}"), ("mfu_percent", "{:.2f}"), ("total_tokens_M", "{:.1f}"),
    ("num_steps", "{:d}"), ("num_params_M", "{:.1f}"), ("depth", "{:d}"),
]


def format_summary(values: dict) -> str:
    """autoresearch's summary block, byte for byte: tools grep it."""
    lines = ["---"]
    for key, fmt in SUMMARY_FORMATS:
        value = int(values[key]) if fmt == "{:d}" else float(values[key])
        lines.append(f"{key + ':':<18}{fmt.format(value)}")
    return "\n".join(lines)


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
        print(f"to train on it, run with NIGHTLAB_DATA={args.data} (or set DATA_SOURCE in prepare.py before the loop starts)")


if __name__ == "__main__":
    main()
