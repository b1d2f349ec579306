"""What a training process may see of the user's environment, and the variables Nightlab adds.

The allow-list keeps paths, locale, thread counts, caches and GPU/compiler settings; no name containing
KEY, TOKEN, SECRET, PASSWORD or CREDENTIAL passes, whatever its prefix (the runner's own
NIGHTLAB_BUDGET_TOKENS, a number, is set after the filter by design).
Must not import: anything of nightlab.server but core.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

# --------------------------------------------------------------------------- environment
# What a training script may see of the user's environment: paths, locale, thread counts, caches and
# GPU/compiler settings. Anything else (API keys, cloud credentials, the agent's tokens) stays out.
ALLOWED_NAMES = frozenset(
    {
        "PATH",
        "HOME",
        "USER",
        "LOGNAME",
        "SHELL",
        "LANG",
        "LANGUAGE",
        "TERM",
        "TMPDIR",
        "TZ",
        "NO_COLOR",
        "VIRTUAL_ENV",
        "PYTHONPATH",
        "PYTHONHASHSEED",
        "PYTHONDONTWRITEBYTECODE",
        "PYTHONWARNINGS",
        "CONDA_PREFIX",
        "CONDA_DEFAULT_ENV",
        "CUDA_HOME",
        "CUDA_PATH",
        "CUDA_DEVICE_ORDER",
        "CUDA_CACHE_PATH",
        "CUDA_LAUNCH_BLOCKING",
        "LD_LIBRARY_PATH",
        "DYLD_LIBRARY_PATH",
        "LIBRARY_PATH",
        "CPATH",
        "CC",
        "CXX",
        "OMP_NUM_THREADS",
        "NUMEXPR_NUM_THREADS",
        "VECLIB_MAXIMUM_THREADS",
        # The harness's own knobs (trainer/prepare.py); the runner's NIGHTLAB_* variables (NIGHTLAB_EVENTS,
        # _SEED, _BUDGET_SECONDS, _BUDGET_TOKENS, _WEIGHTS) are set below, never inherited.
        "NIGHTLAB_CACHE",
        "NIGHTLAB_DATA",
        "NIGHTLAB_TOKENIZER",
        "NIGHTLAB_DEVICE",
        "XDG_CACHE_HOME",
        "HF_HOME",
        "HF_HUB_CACHE",
        "HF_DATASETS_CACHE",
        "HF_HUB_OFFLINE",
        "HF_DATASETS_OFFLINE",
        "TRANSFORMERS_OFFLINE",
        "TORCH_HOME",
        "TORCH_CUDA_ARCH_LIST",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
    }
)
ALLOWED_PREFIXES = (
    "LC_",
    "MKL_",
    "OPENBLAS_",
    "KMP_",
    "UV_",
    "NCCL_",
    "TORCHINDUCTOR_",
    "TRITON_",
    "PYTORCH_",
    "NVIDIA_",
)
# Checked after the allow-list, so an allowed prefix (UV_PUBLISH_TOKEN, NCCL_..._KEY) cannot leak one.
FORBIDDEN_WORDS = ("KEY", "TOKEN", "SECRET", "PASSWORD", "CREDENTIAL")


def _allowed(name: str) -> bool:
    if not (name in ALLOWED_NAMES or name.startswith(ALLOWED_PREFIXES)):
        return False
    upper = name.upper()
    return not any(word in upper for word in FORBIDDEN_WORDS)


def _number_text(value: float) -> str:
    # A whole number of seconds is written "60", not "60.0", so a script may parse it with int().
    return str(int(value)) if float(value).is_integer() else repr(float(value))


# A value that carries a credential, whatever its name: a URL with user:password, or a token with a
# well-known prefix (Anthropic, OpenAI, GitHub, Hugging Face, Slack, AWS access keys, GitLab, PyPI).
_CREDENTIAL_VALUE = re.compile(
    r"[a-z][a-z0-9+.-]*://[^/\s:@]+:[^/\s@]+@"
    r"|\b(?:sk-ant-|sk-proj-|sk-|ghp_|gho_|ghs_|github_pat_|hf_|xox[abpr]-|AKIA|ASIA|glpat-|pypi-)[A-Za-z0-9_\-]{8,}",
    re.IGNORECASE,
)


def carries_credential(value: str) -> bool:
    return bool(_CREDENTIAL_VALUE.search(value))


def build_env(
    parent_env: Mapping[str, str],
    *,
    events_path: Path | str | None,
    seed: int,
    budget_seconds: float | None = None,
    budget_tokens: int | None = None,
    cuda_visible_devices: str | None = None,
    threads: int | None = None,
    weights_path: Path | str | None = None,
) -> dict[str, str]:
    """The environment of a training run: the allowed part of `parent_env` plus Nightlab's variables.
    `threads`: the CPU threads this run may use (several CPU slots share the cores: without a cap their
    OpenMP threads wait on each other and every run slows down many times over). `weights_path`: a judged
    run saves its model's weights there (NIGHTLAB_WEIGHTS) and leaves the measuring to the judge."""
    env = {name: value for name, value in parent_env.items() if _allowed(name) and not carries_credential(value)}
    # The runner's own variables are set after the filter: NIGHTLAB_BUDGET_TOKENS is a number, by design.
    if events_path is not None:
        env["NIGHTLAB_EVENTS"] = str(events_path)
    env["NIGHTLAB_SEED"] = str(int(seed))
    if budget_seconds is not None:
        env["NIGHTLAB_BUDGET_SECONDS"] = _number_text(budget_seconds)
    if budget_tokens is not None:
        env["NIGHTLAB_BUDGET_TOKENS"] = str(int(budget_tokens))
    if weights_path is not None:
        env["NIGHTLAB_WEIGHTS"] = str(weights_path)
    env["PYTHONUNBUFFERED"] = "1"  # step lines and the summary reach the log as they are printed
    if cuda_visible_devices is not None:
        env["CUDA_VISIBLE_DEVICES"] = cuda_visible_devices
    elif "CUDA_VISIBLE_DEVICES" in parent_env:
        env["CUDA_VISIBLE_DEVICES"] = parent_env["CUDA_VISIBLE_DEVICES"]
    if threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(int(threads))
    return env
