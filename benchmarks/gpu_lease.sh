#!/usr/bin/env bash
# Zoo's GPU benchmarks on a lent, time-boxed machine: one command that starts
# them all in the background, one that collects what has finished.
#
#   benchmarks/gpu_lease.sh start            # returns at once; the runs go on (setsid)
#   benchmarks/gpu_lease.sh collect [WAIT_S] # waits up to WAIT_S (default 0) for them,
#                                            # then packs $OUT/gpu_results.tar.gz
#   benchmarks/gpu_lease.sh status           # which runs are done, which one runs
#
# Made for leases whose commands may run 10 minutes each, whose output folder
# ($OUT) is emptied before every command, and which may end before the plan
# does: the runs write to ZOO_LEASE_DIR (default /tmp/zoo_gpu_lease), one
# after the other in priority order, each into its own folder with its log and
# a `.done` file holding its exit status; `collect` packs whatever is there,
# and writes the Markdown/CSV/plot reports of a `zoo bench` run cut short
# from the rows it finished (results.jsonl is written row by row).
#
# The plan, most important first (issue 7's target is resnet50 against
# PyTorch eager on the same device):
#   1. torch_b128_bf16_resnet50   compare_torch, bfloat16, batch 128, infer + train
#   2. torch_b128_fp32_resnet50   the same in float32
#   3. accelerator                zoo bench --suite accelerator --auto-batch
#   4. torch_b128_bf16            compare_torch, the other reference models, bfloat16
# ZOO_LEASE_PLAN=smoke swaps in a tiny CPU plan of the same shape (the tests run it).
#
# Runs with the machine's python3 (PYTHON to change) and the checkout on
# PYTHONPATH; Zoo needs no install beyond JAX, Flax, Optax and, for the
# comparisons, torch and torchvision.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${ZOO_LEASE_DIR:-/tmp/zoo_gpu_lease}"
PYTHON="${PYTHON:-python3}"
PLAN="${ZOO_LEASE_PLAN:-gpu}"

plan() {
  # name<TAB>command (run from the repository root; OUTDIR is the run's folder)
  case "$PLAN" in
    gpu)
      printf '%s\t%s\n' \
        torch_b128_bf16_resnet50 "benchmarks/compare_torch.py --models resnet50 --dtype bfloat16 --batch-size 128 --steps 20 --train-variants eager,channels_last --out OUTDIR" \
        torch_b128_fp32_resnet50 "benchmarks/compare_torch.py --models resnet50 --dtype float32 --batch-size 128 --steps 20 --train-variants eager,channels_last --out OUTDIR" \
        accelerator "-m zoo.cli bench --suite accelerator --auto-batch --no-progress --out OUTDIR" \
        torch_b128_bf16 "benchmarks/compare_torch.py --models mobilenet_v3_large,efficientnet_b0,vit_b_16,convnext_tiny --dtype bfloat16 --batch-size 128 --steps 20 --train-variants eager,channels_last --out OUTDIR"
      ;;
    smoke)
      printf '%s\t%s\n' \
        torch_smoke "benchmarks/compare_torch.py --models resnet18 --image-size 32 --batch-size 2 --mode infer --variants eager --warmup 1 --steps 2 --out OUTDIR" \
        bench_smoke "-m zoo.cli bench --models simple_cnn --batch-sizes 2 --warmup 1 --steps 2 --no-progress --out OUTDIR"
      ;;
    *)
      echo "gpu_lease.sh: unknown ZOO_LEASE_PLAN '$PLAN' (expected gpu or smoke)" >&2
      exit 2
      ;;
  esac
}

run_plan() {
  cd "$REPO"
  export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
  while IFS=$'\t' read -r name command; do
    local out="$DIR/$name"
    mkdir -p "$out"
    echo "$name: started $(date -u +%FT%TZ)" >>"$DIR/progress.log"
    local rc=0
    # shellcheck disable=SC2086  # the command is a word list by design
    "$PYTHON" ${command//OUTDIR/$out} >"$out/log.txt" 2>&1 || rc=$?
    echo "$rc" >"$out/.done"
    echo "$name: exit $rc $(date -u +%FT%TZ)" >>"$DIR/progress.log"
  done < <(plan)
  echo "all done $(date -u +%FT%TZ)" >>"$DIR/progress.log"
}

start() {
  plan >/dev/null  # an unknown plan fails here, before anything is written
  if [[ -f "$DIR/progress.log" ]] && ! grep -q '^all done' "$DIR/progress.log"; then
    echo "gpu_lease.sh: a plan is already running in $DIR (see its progress.log)" >&2
    exit 1
  fi
  if [[ -d "$DIR" ]] && [[ -n "$(ls -A "$DIR")" ]]; then
    # Never delete results: a finished plan's folder is collected, then moved by hand.
    echo "gpu_lease.sh: $DIR already holds results; collect them, then remove it or set" \
      "ZOO_LEASE_DIR to another folder" >&2
    exit 1
  fi
  mkdir -p "$DIR"
  {
    echo "commit: $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)"
    echo "started: $(date -u +%FT%TZ)"
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>/dev/null || true
    "$PYTHON" -c 'import importlib.metadata as m
for p in ("jax", "jaxlib", "flax", "optax", "torch", "torchvision"):
    try: print(p, m.version(p))
    except m.PackageNotFoundError: print(p, "-")' || true
  } >"$DIR/machine.txt" 2>&1
  # Written before the runner starts, so that a second start sees this one.
  echo "plan '$PLAN' started $(date -u +%FT%TZ)" >"$DIR/progress.log"
  setsid nohup bash "$REPO/benchmarks/gpu_lease.sh" _run >"$DIR/runner.log" 2>&1 </dev/null &
  echo "started the '$PLAN' plan in $DIR (pid $!); collect with: $0 collect SECONDS"
}

status() {
  [[ -f "$DIR/progress.log" ]] || { echo "no plan started in $DIR"; return 0; }
  cat "$DIR/progress.log"
}

finish_partial_reports() {
  # A zoo bench run cut short has results.jsonl only: write its other reports.
  local out
  for out in "$DIR"/*/; do
    [[ -f "$out/results.jsonl" && ! -f "$out/results.md" ]] || continue
    (cd "$REPO" && PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" -c '
import sys
from pathlib import Path
from zoo.bench.plots import write_plots
from zoo.bench.report import markdown_table, read_jsonl, write_reports
out = Path(sys.argv[1])
rows = read_jsonl(out / "results.jsonl")
(out / "partial.txt").write_text(f"cut short: {len(rows)} rows finished when collected\n")
write_reports(out, rows)
write_plots(out, rows)
print(markdown_table(rows))' "$out") || echo "gpu_lease.sh: could not write the reports of $out" >&2
  done
}

collect() {
  local wait_s="${1:-0}" waited=0
  [[ -f "$DIR/progress.log" ]] || { echo "gpu_lease.sh: nothing started in $DIR" >&2; exit 1; }
  while ! grep -q '^all done' "$DIR/progress.log" && ((waited < wait_s)); do
    sleep 5
    waited=$((waited + 5))
  done
  finish_partial_reports
  local dest="${OUT:-$DIR/..}"
  mkdir -p "$dest"
  tar czf "$dest/gpu_results.tar.gz" -C "$DIR" .
  status
  echo "packed $dest/gpu_results.tar.gz"
}

case "${1:-}" in
  start) start ;;
  _run) run_plan ;;
  status) status ;;
  collect) collect "${2:-0}" ;;
  *)
    echo "usage: $0 start | status | collect [WAIT_SECONDS]" >&2
    exit 2
    ;;
esac
