#!/usr/bin/env bash
# GPU readiness in one command: does the gpu profile train, how fast, how noisy, and does the loop run
# on it (sandboxed)? Prints one table (figure, value) at the end.
#
#   benchmarks/gpu_check.sh              # on a CUDA machine: about 10 minutes on an H100 (set-up excluded)
#   benchmarks/gpu_check.sh --dry-run    # anywhere: a tiny CPU version of every step, about a minute
#   benchmarks/gpu_check.sh --out DIR    # also write the table, the logs and the figures (JSON) to DIR
#
# Steps (GPU sizes; --dry-run: the cpu profile, a few thousand tokens, a 1-experiment loop):
#   0. set-up as the README does (./dev.sh setup: .venv, the CUDA build of torch where nvidia-smi works),
#      and the data cache (the BPE tokenizer is trained the first time)
#   1. the trainer benchmark at autoresearch's size (depth 8, width 512, seq 2048, 2^19 tokens a step),
#      time mode: GPU_CHECK_SECONDS of training (default 30)
#   2. the same, token mode, three seeds: GPU_CHECK_TOKENS each (default 40 steps = 20,971,520 tokens);
#      the spread of their val_bpb is the run-to-run noise a token budget leaves
#   3. the loop: `nightlab init --profile gpu`, then `nightlab run --max-experiments 3 --budget-tokens N
#      --plain` (N = GPU_CHECK_LOOP_TOKENS, default 16 steps) with the strict policy (no repeat runs, so
#      its length is bounded) and `[run] sandbox = "required"` when bubblewrap works here
# Sizing: autoresearch's baseline does ~1.6M tok/s on an H100; the first run of each new train.py also
# pays torch.compile (tens of seconds). Each step has a deadline, so the whole stays within 12 minutes
# after set-up (GPU_CHECK_LIMIT seconds, default 690; a step cut short shows as FAILED in the table).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DRY=0
OUT=""

usage() { sed -n '2,8p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --out) [ $# -ge 2 ] || { echo "gpu_check: --out needs a folder" >&2; exit 2; }; OUT="$2"; shift ;;
    --out=*) OUT="${1#--out=}" ;;
    -h|--help) usage; exit 0 ;;
    *) echo "gpu_check: unknown argument $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done

say() { echo "[gpu_check $(date +%H:%M:%S)] $*" >&2; }
STARTED=$SECONDS

if [ $DRY -eq 0 ] && ! { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; }; then
  echo "gpu_check: no CUDA GPU here (nvidia-smi finds none). This check is for a CUDA machine;" >&2
  echo "           benchmarks/gpu_check.sh --dry-run runs a tiny CPU version of every step." >&2
  exit 2
fi

say "0. set-up: ./dev.sh setup (makes .venv; the CUDA build of torch where nvidia-smi works)"
"$ROOT/dev.sh" setup
PY="$ROOT/.venv/bin/python"
NIGHTLAB="$ROOT/.venv/bin/nightlab"
if [ $DRY -eq 0 ] && ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "gpu_check: nvidia-smi sees a GPU but .venv's torch cannot use CUDA ($("$PY" -c 'import torch; print(torch.__version__)'))." >&2
  echo "           Reinstall it with the CUDA build: rm -rf .venv && NIGHTLAB_TORCH='torch==X.Y' ./dev.sh setup" >&2
  exit 2
fi

if [ $DRY -eq 1 ]; then
  MODE="dry run (CPU)"
  PROFILE=cpu
  BENCH=(--profile cpu --device cpu --warmup-steps 0)
  SECONDS_BUDGET=2
  TOKENS=4096          # one step of the cpu profile
  LOOP_TOKENS=4096
  LOOP_EXPERIMENTS=1
  LOOP_LIMIT=180       # seconds before the loop is stopped (SIGINT, then killed 30 s later)
  RUN_LIMIT=120        # seconds before one benchmark run is killed
  export NIGHTLAB_DEVICE=cpu
else
  MODE="CUDA"
  PROFILE=gpu
  BENCH=(--gpu-autoresearch)
  SECONDS_BUDGET="${GPU_CHECK_SECONDS:-30}"
  TOKENS="${GPU_CHECK_TOKENS:-$((40 * 524288))}"
  LOOP_TOKENS="${GPU_CHECK_LOOP_TOKENS:-$((16 * 524288))}"
  LOOP_EXPERIMENTS=3
  LOOP_LIMIT="${GPU_CHECK_LOOP_LIMIT:-330}"
  RUN_LIMIT="${GPU_CHECK_RUN_LIMIT:-200}"
fi

# One deadline for the steps after set-up (an install of CUDA torch can take minutes of its own): no step
# may run past it, so the check ends within GPU_CHECK_LIMIT seconds (default 690: 11.5 minutes).
DEADLINE=$(( SECONDS + ${GPU_CHECK_LIMIT:-690} ))
cap() { local left=$(( DEADLINE - SECONDS - 15 )); [ "$left" -lt 20 ] && left=20; [ "$1" -lt "$left" ] && echo "$1" || echo "$left"; }

WORK="$(mktemp -d "${TMPDIR:-/tmp}/nightlab-gpu-check-XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"
failed=()
step_s() { echo "$1 $(( SECONDS - $2 ))" >> "$WORK/steps.txt"; }

say "0. data: nightlab init --profile $PROFILE $WORK/loop, then prepare.py there (tokenizer and token cache, once per corpus)"
t=$SECONDS
"$NIGHTLAB" init --profile "$PROFILE" "$WORK/loop" > "$WORK/init.log" 2>&1 || { cat "$WORK/init.log" >&2; failed+=("init"); }
if [ -f "$WORK/loop/prepare.py" ]; then
  (cd "$WORK/loop" && timeout "$(cap 300)" "$PY" prepare.py) > "$WORK/prepare.log" 2>&1 || { tail -20 "$WORK/prepare.log" >&2; failed+=("prepare"); }
fi
step_s prepare $t

say "1. trainer benchmark, time mode: ${SECONDS_BUDGET} s of training (${BENCH[*]})"
t=$SECONDS
"$PY" "$ROOT/benchmarks/trainer_throughput.py" "${BENCH[@]}" --seconds "$SECONDS_BUDGET" --timeout "$(cap "$RUN_LIMIT")" --json "$WORK/time.json" \
  2>&1 | tee "$WORK/time.log" >&2 || failed+=("time mode")
step_s time $t

say "2. trainer benchmark, token mode: $TOKENS tokens, seeds 1, 2, 3 (the spread of val_bpb is the noise)"
t=$SECONDS
for seed in 1 2 3; do
  say "   token run $seed of 3 (seed $seed)"
  "$PY" "$ROOT/benchmarks/trainer_throughput.py" "${BENCH[@]}" --tokens "$TOKENS" --seed "$seed" \
    --timeout "$(cap "$RUN_LIMIT")" --json "$WORK/tokens-$seed.json" 2>&1 | tee "$WORK/tokens-$seed.log" >&2 || failed+=("token run $seed")
done
step_s tokens $t

if [ -n "$("$PY" -c 'from nightlab.server.run.sandbox import probe; print(probe() or "")')" ]; then
  SANDBOX=off
  say "3. the loop: bubblewrap cannot sandbox runs here ($("$PY" -c 'from nightlab.server.run.sandbox import probe; print(probe())')): it runs UNSANDBOXED"
else
  SANDBOX=required
  say "3. the loop, sandboxed (bubblewrap; [run] sandbox = \"required\")"
fi
echo "$SANDBOX" > "$WORK/sandbox.txt"
t=$SECONDS
if [ -f "$WORK/loop/nightlab.toml" ]; then
  sed -i "s/^sandbox = \"auto\"/sandbox = \"$SANDBOX\"/" "$WORK/loop/nightlab.toml"
  say "   nightlab run --max-experiments $LOOP_EXPERIMENTS --budget-tokens $LOOP_TOKENS --policy strict --plain (stopped after $(cap "$LOOP_LIMIT") s)"
  (cd "$WORK/loop" && timeout -s INT -k 30 "$(cap "$LOOP_LIMIT")" "$NIGHTLAB" run --max-experiments "$LOOP_EXPERIMENTS" \
    --budget-tokens "$LOOP_TOKENS" --policy strict --plain) 2>&1 | tee "$WORK/loop.log" >&2 || failed+=("loop")
else
  failed+=("loop")
fi
step_s loop $t
echo "total $(( SECONDS - STARTED ))" >> "$WORK/steps.txt"

say "done: the table"
printf '%s\n' "${failed[@]+"${failed[@]}"}" > "$WORK/failed.txt"
"$PY" "$ROOT/benchmarks/gpu_check_table.py" "$WORK" --mode "$MODE" --budgets "$SECONDS_BUDGET" "$TOKENS" "$LOOP_TOKENS" \
  > "$WORK/table.txt"
cat "$WORK/table.txt"
if [ -n "$OUT" ]; then
  mkdir -p "$OUT"
  cp "$WORK"/*.txt "$WORK"/*.log "$OUT"/ 2>/dev/null || true
  cp "$WORK"/*.json "$OUT"/ 2>/dev/null || true
  cp "$WORK"/loop/.nightlab/*/results.tsv "$OUT"/loop-results.tsv 2>/dev/null || true
  say "written to $OUT (table.txt, logs, figures)"
fi
if [ ${#failed[@]} -gt 0 ]; then
  say "FAILED: ${failed[*]}"
  exit 1
fi
