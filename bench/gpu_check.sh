#!/usr/bin/env bash
# One short check of the GPU path on the model organism: diagnose ft-harmful, repair it and
# ft-lora by rollback, diagnose the repaired model again in bfloat16, all through the CLI with
# --device cuda. Needs the organism in .surgeon-cache/organism (carried to the device machine)
# and writes JSON under $OUT.
set -uo pipefail
export PYTHONPATH=$PWD SURGEON_QUIET=1
OUT=${OUT:-/tmp/gpu-check}; mkdir -p "$OUT"
ORG=.surgeon-cache/organism; P=$ORG/prompts
surgeon() { python -c "from cli import app; app()" "$@"; }
python -c "import torch, transformers, peft; print(torch.__version__, transformers.__version__, peft.__version__, torch.cuda.get_device_name())"
t0=$(date +%s)
surgeon diagnose $ORG/ft-harmful --base $ORG/base --harmful $P/harmful_heldout.jsonl \
  --harmless $P/harmless_train.jsonl --over-refusal $P/harmless_heldout.jsonl \
  --device cuda --out /tmp/gc-diag --json > "$OUT/diagnose.json"; echo "diagnose rc=$? $(( $(date +%s) - t0 )) s"
t0=$(date +%s)
surgeon repair $ORG/ft-harmful --base $ORG/base --method rollback --layer 6 \
  --harmful $P/harmful_train.jsonl --harmful-heldout $P/harmful_heldout.jsonl \
  --task $P/task_train.jsonl --task-heldout $P/task_heldout.jsonl \
  --harmless $P/harmless_train.jsonl --include-embeddings \
  --device cuda --out /tmp/gc-rep --json > "$OUT/repair.json"; echo "repair rc=$? $(( $(date +%s) - t0 )) s"
t0=$(date +%s)
surgeon repair $ORG/ft-lora --base $ORG/base --method rollback --layer 6 \
  --harmful $P/harmful_train.jsonl --harmful-heldout $P/harmful_heldout.jsonl \
  --task $P/task_train.jsonl --task-heldout $P/task_heldout.jsonl \
  --harmless $P/harmless_train.jsonl --include-embeddings \
  --device cuda --out /tmp/gc-lora --json > "$OUT/repair_lora.json"; echo "repair ft-lora rc=$? $(( $(date +%s) - t0 )) s"
t0=$(date +%s)
surgeon diagnose /tmp/gc-rep --base $ORG/base --harmful $P/harmful_heldout.jsonl \
  --harmless $P/harmless_train.jsonl --over-refusal $P/harmless_heldout.jsonl \
  --device cuda --dtype bfloat16 --out /tmp/gc-diag2 --json > "$OUT/diagnose_after.json"
echo "diagnose-after rc=$? $(( $(date +%s) - t0 )) s"
python - "$OUT" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
for name in ("diagnose", "repair", "repair_lora", "diagnose_after"):
    try:
        r = json.loads((out / f"{name}.json").read_text())
    except Exception as exc:  # noqa: BLE001 - report whatever is there
        print(name, "unreadable:", exc); continue
    b = r.get("behaviour", {})
    print(name, {k: r.get(k) for k in ("verdict", "harmful_rate_before", "harmful_rate_after",
          "task_metric_before", "task_metric_after", "restored_fraction_decoder",
          "over_refusal_before", "over_refusal_after", "peak_memory") if k in r},
          {k: b.get(k) for k in ("harmful_rate", "harmful_rate_base", "over_refusal_rate")})
PY
