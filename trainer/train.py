"""
A small GPT trained for a fixed budget: the one file of the experiment the agent edits.

Run it with `python train.py`. The harness in prepare.py (fixed) supplies the data, the budget, the
step lines and the metric; everything here is fair game: the model, the optimizer, the schedule and
the UPPER_CASE knobs below. Needs torch and numpy; imports nothing from nightlab.

The contract with the judge (judge.py, fixed), which measures the weights training saves in a process
of its own: `build_model(vocab_size, seq_len)` stays at module level and returns the untrained model
whose `state_dict()` `h.finish(model)` is given; `model(idx)` returns logits (B, T, vocab_size), or a
tuple that starts with them, and position t depends on idx[:, :t + 1] only (causal: the judge checks);
importing this file trains nothing (main() runs under `if __name__ == "__main__"` only).
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from prepare import Harness

# ---------------------------------------------------------------------------
# Knobs (the agent's first levers; `nightlab init --profile gpu` rewrites them for a GPU)

DEPTH = 4                   # transformer blocks
WIDTH = 128                 # model dimension
HEAD_DIM = 32               # attention head size; heads = WIDTH // HEAD_DIM
MLP_RATIO = 4               # hidden units of the MLP per model dimension
SEQ_LEN = 256               # training context (at most the harness's; eval always uses the harness's)
DEVICE_BATCH_SIZE = 16      # rows per forward/backward pass
TOTAL_BATCH_SIZE = 4096     # tokens per optimizer step (gradient accumulation makes up the rest)
MATRIX_LR = 0.02            # Muon learning rate for the 2-D weights inside blocks
EMBED_LR = 0.01             # AdamW learning rate for the token embedding
UNEMBED_LR = 0.004          # AdamW learning rate for the output head
WEIGHT_DECAY = 0.0          # AdamW weight decay (embeddings and head)
ADAM_BETA1 = 0.8            # AdamW beta1
ADAM_BETA2 = 0.95           # AdamW beta2
MUON_MOMENTUM = 0.95        # Muon momentum
WARMUP_RATIO = 0.0          # share of the budget spent warming the learning rate up
WARMDOWN_RATIO = 0.4        # share of the budget spent decaying it to FINAL_LR_FRAC
FINAL_LR_FRAC = 0.0         # learning rate at the end, as a fraction of the peak
LOGIT_SOFTCAP = 15.0        # tanh soft cap on the logits (0 disables)
USE_MUON = True             # Muon for matrices (False: AdamW everywhere at MATRIX_LR / 10)
COMPILE = False             # torch.compile the model (worth it on a GPU, ~30 s lost on a CPU)


# ---------------------------------------------------------------------------
# Model: RoPE, RMSNorm, QK-norm, ReLU^2 MLP, SDPA attention, untied head


def rms_norm(x):
    return F.rms_norm(x, (x.size(-1),))


def rotary(seq_len, head_dim, device, base=10000.0):
    inv = 1.0 / (base ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim))
    freqs = torch.outer(torch.arange(seq_len, device=device, dtype=torch.float32), inv)
    return freqs.cos()[None, :, None, :], freqs.sin()[None, :, None, :]


def apply_rotary(x, cos, sin):
    d = x.size(-1) // 2
    x1, x2 = x[..., :d], x[..., d:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).type_as(x)


class Attention(nn.Module):
    def __init__(self, width, head_dim):
        super().__init__()
        self.heads, self.head_dim = width // head_dim, head_dim
        self.qkv = nn.Linear(width, 3 * width, bias=False)
        self.proj = nn.Linear(width, width, bias=False)
        nn.init.zeros_(self.proj.weight)

    def forward(self, x, cos, sin):
        B, T, C = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.heads, self.head_dim).unbind(2)
        q, k = apply_rotary(rms_norm(q), cos, sin), apply_rotary(rms_norm(k), cos, sin)
        y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))


class MLP(nn.Module):
    def __init__(self, width, ratio):
        super().__init__()
        self.up = nn.Linear(width, ratio * width, bias=False)
        self.down = nn.Linear(ratio * width, width, bias=False)
        nn.init.zeros_(self.down.weight)

    def forward(self, x):
        return self.down(F.relu(self.up(x)).square())


class Block(nn.Module):
    def __init__(self, width, head_dim, ratio):
        super().__init__()
        self.attn, self.mlp = Attention(width, head_dim), MLP(width, ratio)

    def forward(self, x, cos, sin):
        x = x + self.attn(rms_norm(x), cos, sin)
        return x + self.mlp(rms_norm(x))


class GPT(nn.Module):
    def __init__(self, vocab_size, max_seq_len, depth, width, head_dim, mlp_ratio, softcap):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, width)
        self.blocks = nn.ModuleList(Block(width, head_dim, mlp_ratio) for _ in range(depth))
        self.head = nn.Linear(width, vocab_size, bias=False)
        nn.init.normal_(self.embed.weight, std=1.0)
        nn.init.zeros_(self.head.weight)
        self.softcap = softcap
        self.max_seq_len = max_seq_len
        self.head_dim = head_dim

    def forward(self, idx):
        T = idx.size(1)
        cos, sin = rotary(T, self.head_dim, idx.device)
        x = rms_norm(self.embed(idx))
        for block in self.blocks:
            x = block(x, cos, sin)
        logits = self.head(rms_norm(x)).float()
        if self.softcap:
            logits = self.softcap * torch.tanh(logits / self.softcap)
        return logits

    def flops_per_token(self, seq_len):
        # 6 FLOPs per parameter per token (forward + backward), plus attention's score and value products.
        matmul = sum(p.numel() for n, p in self.named_parameters() if n != "embed.weight")
        width = self.embed.weight.size(1)
        return 6 * matmul + 12 * len(self.blocks) * width * seq_len


def build_model(vocab_size, seq_len):
    # The judge rebuilds the model with this and loads the saved weights into it: keep the name and
    # the arguments (the knobs above are read here, at call time).
    return GPT(vocab_size, seq_len, DEPTH, WIDTH, HEAD_DIM, MLP_RATIO, LOGIT_SOFTCAP)


# ---------------------------------------------------------------------------
# Optimizer: Muon (orthogonalised momentum) for the matrices inside blocks, AdamW for the rest


def newton_schulz(g, steps=5):
    a, b, c = 3.4445, -4.7750, 2.0315
    x = g.bfloat16() if g.is_cuda else g.float()
    transposed = x.size(0) > x.size(1)
    if transposed:
        x = x.T
    x = x / (x.norm() + 1e-7)
    for _ in range(steps):
        s = x @ x.T
        x = a * x + (b * s + c * s @ s) @ x
    return (x.T if transposed else x).type_as(g)


class Muon(torch.optim.Optimizer):
    def __init__(self, params, lr, momentum):
        super().__init__(params, dict(lr=lr, momentum=momentum))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                buf = self.state[p].setdefault("momentum", torch.zeros_like(p.grad))
                buf.mul_(group["momentum"]).add_(p.grad)
                update = newton_schulz(p.grad.add(buf, alpha=group["momentum"]))
                p.add_(update, alpha=-group["lr"] * max(1.0, p.size(0) / p.size(1)) ** 0.5)


def build_optimizers(model):
    matrices = [p for n, p in model.named_parameters() if n.startswith("blocks.") and p.ndim == 2]
    adam_groups = [
        dict(params=[model.embed.weight], lr=EMBED_LR),
        dict(params=[model.head.weight], lr=UNEMBED_LR),
    ]
    if USE_MUON:
        optimizers = [Muon(matrices, lr=MATRIX_LR, momentum=MUON_MOMENTUM)]
    else:
        adam_groups.append(dict(params=matrices, lr=MATRIX_LR / 10))
        optimizers = []
    optimizers.append(torch.optim.AdamW(adam_groups, betas=(ADAM_BETA1, ADAM_BETA2), weight_decay=WEIGHT_DECAY))
    for opt in optimizers:
        for group in opt.param_groups:
            group["initial_lr"] = group["lr"]
    return optimizers


def lr_multiplier(progress):
    if progress < WARMUP_RATIO:
        return (progress + 1e-3) / WARMUP_RATIO
    if progress < 1.0 - WARMDOWN_RATIO:
        return 1.0
    cooldown = (1.0 - progress) / WARMDOWN_RATIO
    return cooldown * 1.0 + (1.0 - cooldown) * FINAL_LR_FRAC


# ---------------------------------------------------------------------------
# Training


def main():
    h = Harness()
    seq_len = min(SEQ_LEN, h.seq_len)
    model = build_model(h.vocab_size, h.seq_len).to(h.device)
    num_params = sum(p.numel() for p in model.parameters())
    print(f"device: {h.device_type} | params: {num_params / 1e6:.2f}M | budget: {h.budget.mode} {h.budget.amount:g}")
    step_model = torch.compile(model) if COMPILE else model
    optimizers = build_optimizers(model)
    tokens_per_micro = DEVICE_BATCH_SIZE * seq_len
    accum = max(1, math.ceil(TOTAL_BATCH_SIZE / tokens_per_micro))
    h.start(num_params=num_params, depth=DEPTH, flops_per_token=model.flops_per_token(seq_len))
    loader = h.batches(DEVICE_BATCH_SIZE, seq_len)
    while not h.done:
        for _ in range(accum):
            x, y = next(loader)
            with h.autocast():
                logits = step_model(x)
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), y.reshape(-1))
            (loss / accum).backward()
        lrm = lr_multiplier(h.progress)
        for opt in optimizers:
            for group in opt.param_groups:
                group["lr"] = group["initial_lr"] * lrm
            opt.step()
        model.zero_grad(set_to_none=True)
        h.step(loss.detach(), lrm=lrm, tokens=accum * tokens_per_micro)
    h.finish(model)


if __name__ == "__main__":
    main()
