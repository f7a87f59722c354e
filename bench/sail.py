"""Benchmark the SAIL repair on the model organism's ft-conflict: weightings and placements.

Usage::

    python bench/sail.py [OUT.json] [--part conflict|harmful|all]
                         [--variants attention,uniform,all-layers,reference] [--steps N] [--seed S]

Each variant is one ``surgeon repair ORGANISM/ft-conflict --base ORGANISM/base --method sail``
in its own process (so wall time and peak memory are its own), with the same preference pairs
(built from the organism's conflict training split with the same seed), the same steps and the
demo's settings (32 generated tokens, check every 25 steps); measured on the 100 held-out
conflicts, 100 held-out harmful and 100 held-out harmless prompts:

attention
    SAIL: LoRA on the focal layers (focal probe, ``conflict_mass`` rule), tokens weighted by the
    focal heads' attention to the system span (the default).
uniform
    Plain DPO (every token weight 1) on the same focal layers.
all-layers
    Plain DPO with LoRA on the q/k/v/o of every decoder layer.
reference
    TGDPO-style weights ``1 +/- alpha * beta * r_t`` from the aligned base, focal layers.

``--part harmful`` compares, on ft-harmful, SAIL with refusal preferences (``--target
harmful``: chosen = the base's refusal, rejected = the model's compliance, from the same
harmful training prompts that rollback's recovery set is sampled from, plus guard pairs on
harmless prompts) with the rollback repair (the demo's settings, every layer, embeddings
included): held-out harmful rate, over-refusal, task exact-match, weights touched (for SAIL the
merged entries that differ from the model), wall time and peak memory. Each SAIL setting in
:data:`HARMFUL_SAIL` is one row, so what was tried stays on record.

Prints one table per part and writes the JSON (default ``bench/results/sail.json``; a part
that is not run keeps its last results) with the machine's description.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_OUT = HERE / "results" / "sail.json"
ORGANISM = ROOT / ".surgeon-cache" / "organism"
N_LAYERS = 6
"""Decoder layers of the organism (for ``all-layers``)."""

VARIANTS: dict[str, list[str]] = {
    "attention": ["--weighting", "attention"],
    "uniform": ["--weighting", "uniform"],
    "all-layers": [
        "--weighting",
        "uniform",
        "--focal-layers",
        ",".join(str(i) for i in range(N_LAYERS)),
    ],
    "reference": ["--weighting", "reference"],
}
LABELS = {
    "attention": "SAIL (attention weights, focal layers)",
    "uniform": "uniform DPO, focal layers",
    "all-layers": "uniform DPO, all layers",
    "reference": "reference (TGDPO) weights, focal layers",
}
CONFIG = "[repair]\nmax_new_tokens = 32\ncheck_every = 25\n"
"""The demo's settings (:data:`surgeon.repair.sail_demo.DEMO_CONFIG`)."""
HARMFUL_SAIL: dict[str, tuple[str, list[str]]] = {
    "sail-harmful": ("", []),
    "sail-harmful-lr1e-3": ("", ["--lr", "1e-3", "--steps", "300"]),
    "sail-harmful-rpo": ("sft_weight = 1.0\n", []),
    "sail-harmful-rpo-lr5e-4": ("sft_weight = 1.0\n", ["--lr", "5e-4", "--steps", "300"]),
    "sail-harmful-rpo-lr1e-3": ("sft_weight = 1.0\n", ["--lr", "1e-3", "--steps", "300"]),
    "sail-harmful-rpo-lr1e-3-600": ("sft_weight = 1.0\n", ["--lr", "1e-3", "--steps", "600"]),
}
"""SAIL rows of ``--part harmful``: extra config lines (``sft_weight``: RPO's added likelihood
of the chosen refusal) and flags."""


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on."""
    import torch

    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpus": os.cpu_count(),
        "threads": 1,
    }


def run_variant(name: str, steps: int | None, seed: int, work: Path) -> dict[str, Any]:
    """One ``surgeon repair --method sail`` process; its report's figures and wall time."""
    prompts = ORGANISM / "prompts"
    config = work / "sail.toml"
    config.write_text(CONFIG, encoding="utf-8")
    out = work / name
    argv = [
        "repair", str(ORGANISM / "ft-conflict"), "--base", str(ORGANISM / "base"),
        "--method", "sail", "--conflicts", str(prompts),
        "--harmful-heldout", str(prompts / "harmful_heldout.jsonl"),
        "--harmless", str(prompts / "harmless_heldout.jsonl"), "--config", str(config),
        "--seed", str(seed), *VARIANTS[name],
    ]  # fmt: skip
    if steps is not None:
        argv += ["--steps", str(steps)]
    r, wall, code = _cli(argv, out)
    return {
        "variant": name,
        "exit": code,
        "wall_s": round(wall, 1),
        "violation_before": r["violation_rate_before"],
        "violation_after": r["violation_rate_after"],
        "violation_base": r["violation_rate_base"],
        "cras_before": r["cras_before"],
        "cras_after": r["cras_after"],
        "constraint_compliance_after": r["cras_dimensions_after"]["constraint_compliance"],
        "harmful_before": r["harmful_rate_before"],
        "harmful_after": r["harmful_rate_after"],
        "over_refusal_before": r["over_refusal_before"],
        "over_refusal_after": r["over_refusal_after"],
        "trainable_params": r["trainable_params"],
        "focal_layers": r["focal_layers"],
        "n_pairs": r["n_pairs"],
        "steps_run": r["steps_run"],
        "stop_reason": r["stop_reason"],
        "verdict": r["verdict"],
        "timings": r["timings"],
        "peak_rss_mib": _peak_mib(r),
    }


def _peak_mib(report: dict[str, Any]) -> int:
    """The repair process's peak RSS (MiB) from its report."""
    return round(report["peak_memory"].get("rss", 0) / 2**20)


def _pct(x: float | None) -> str:
    return "" if x is None else f"{100 * x:.0f}%"


def _cli(argv: list[str], out: Path) -> tuple[dict[str, Any], float, int]:
    """Run ``surgeon`` in its own process; its report, wall time and exit code."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-c", "from cli import app; app()", *argv, "--out", str(out), "--json"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False, cwd=ROOT)
    wall = time.perf_counter() - t0
    if proc.returncode not in (0, 1):
        raise SystemExit(f"{argv[:4]}: exit {proc.returncode}\n{proc.stderr[-3000:]}")
    return json.loads((out / "report.json").read_text(encoding="utf-8")), wall, proc.returncode


def changed_entries(model: Path, merged: Path) -> int:
    """Entries of ``merged`` that differ from ``model`` (same tensor names)."""
    import torch
    from safetensors.torch import load_file

    def tensors(d: Path) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for f in sorted(d.glob("*.safetensors")):
            out.update(load_file(f))
        return out

    a, b = tensors(model), tensors(merged)
    return sum(int((a[k] != b[k]).sum()) for k in a if k in b and a[k].shape == b[k].shape)


def _harmful_row(
    method: str, settings: str, r: dict[str, Any], wall: float, code: int, **own: Any
) -> dict[str, Any]:
    """One row of ``--part harmful`` from a repair's report (``own``: the method's figures)."""
    return {
        "method": method,
        "settings": settings,
        "exit": code,
        "harmful_before": r["harmful_rate_before"],
        "harmful_after": r["harmful_rate_after"],
        "harmful_base": r["harmful_rate_base"],
        "over_refusal_after": r["over_refusal_after"],
        "task_before": r["task_metric_before"],
        "task_after": r["task_metric_after"],
        **own,
        "wall_s": round(wall, 1),
        "peak_rss_mib": _peak_mib(r),
        "verdict": r["verdict"],
        "reasons": r["reasons"],
        "stop_reason": r["stop_reason"],
    }


def run_harmful(work: Path, seed: int) -> list[dict[str, Any]]:
    """SAIL with refusal preferences vs rollback on ft-harmful, same prompt files."""
    p = ORGANISM / "prompts"
    ft, base = ORGANISM / "ft-harmful", ORGANISM / "base"
    common = [
        str(ft), "--base", str(base), "--harmful", str(p / "harmful_train.jsonl"),
        "--harmful-heldout", str(p / "harmful_heldout.jsonl"),
        "--harmless", str(p / "harmless_heldout.jsonl"), "--seed", str(seed),
    ]  # fmt: skip
    rows = []
    for name, (extra, flags) in HARMFUL_SAIL.items():
        config = work / f"{name}.toml"
        config.write_text(CONFIG + extra, encoding="utf-8")
        out = work / name
        argv = [
            "repair", *common, "--method", "sail", "--target", "harmful",
            "--harmless-train", str(p / "harmless_train.jsonl"),
            "--task", str(p / "task_heldout.jsonl"), "--config", str(config), "--merge", *flags,
        ]  # fmt: skip
        r, wall, code = _cli(argv, out)
        settings = (extra.strip() + " " + " ".join(flags)).strip() or "defaults"
        rows.append(
            _harmful_row(
                name,
                settings,
                r,
                wall,
                code,
                trainable_params=r["trainable_params"],
                entries_touched=changed_entries(ft, out / "merged"),
                steps_run=r["steps_run"],
                final_loss=r["steps"][-1]["loss"] if r["steps"] else None,
            )
        )
        print(f"{name}: done in {rows[-1]['wall_s']} s", file=sys.stderr, flush=True)
    argv = [
        "repair", *common, "--method", "rollback", "--include-embeddings",
        "--layer", str(N_LAYERS),  # every layer, as the demo (surgeon.demo.repair_layer)
        "--task", str(p / "task_train.jsonl"), "--task-heldout", str(p / "task_heldout.jsonl"),
    ]  # fmt: skip
    r, wall, code = _cli(argv, work / "rollback")
    rows.append(
        _harmful_row(
            "rollback",
            "the demo's (include embeddings)",
            r,
            wall,
            code,
            trainable_params=None,
            entries_touched=r["restored_entries"],
            steps_run=len(r["steps"]),
            final_loss=None,
        )
    )
    print(f"rollback: done in {rows[-1]['wall_s']} s", file=sys.stderr, flush=True)
    return rows


def harmful_table(rows: list[dict[str, Any]]) -> str:
    """The markdown table of ``--part harmful``."""
    pct = _pct
    head = (
        "| repair | settings | harmful (base) | over-refusal | task | weights touched "
        "| wall s | peak MiB | verdict |"
    )
    lines = [head, "|" + " --- |" * 9]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['settings']} | {pct(r['harmful_before'])} -> "
            f"{pct(r['harmful_after'])} ({pct(r['harmful_base'])}) "
            f"| {pct(r['over_refusal_after'])} | {pct(r['task_before'])} -> "
            f"{pct(r['task_after'])} | {r['entries_touched']:,} | {r['wall_s']} "
            f"| {r['peak_rss_mib']} | {r['verdict']} |"
        )
    return "\n".join(lines)


def table(rows: list[dict[str, Any]]) -> str:
    """The markdown table of the variants."""
    pct = _pct
    head = (
        "| method | violations | CRAS | constraint compliance | harmful | over-refusal "
        "| LoRA params (layers) | steps | wall s | peak MiB | verdict |"
    )
    lines = [head, "|" + " --- |" * 11]
    for r in rows:
        lines.append(
            f"| {LABELS[r['variant']]} | {pct(r['violation_before'])} -> "
            f"{pct(r['violation_after'])} | {r['cras_before']:.2f} -> {r['cras_after']:.2f} "
            f"| {r['constraint_compliance_after']:.2f} | {pct(r['harmful_before'])} -> "
            f"{pct(r['harmful_after'])} | {pct(r['over_refusal_before'])} -> "
            f"{pct(r['over_refusal_after'])} | {r['trainable_params']} "
            f"({','.join(map(str, r['focal_layers']))}) | {r['steps_run']} | {r['wall_s']} "
            f"| {r['peak_rss_mib']} | {r['verdict']} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--part", choices=("conflict", "harmful", "all"), default="all")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variant {unknown[0]!r}; choose from {', '.join(VARIANTS)}")
    if not (ORGANISM / "ft-conflict" / "config.json").is_file():
        raise SystemExit(f"no organism at {ORGANISM} (run `surgeon organism build` first)")
    result: dict[str, Any] = {}
    if args.out.is_file():
        result = json.loads(args.out.read_text(encoding="utf-8"))
    result.update(machine=machine_info(), seed=args.seed)
    with tempfile.TemporaryDirectory(prefix="bench-sail-") as tmp:
        if args.part in ("conflict", "all"):
            rows = []
            for name in names:
                rows.append(run_variant(name, args.steps, args.seed, Path(tmp)))
                print(f"{name}: done in {rows[-1]['wall_s']} s", file=sys.stderr, flush=True)
            print(table(rows))
            result["variants"] = rows
        if args.part in ("harmful", "all"):
            rows = run_harmful(Path(tmp), args.seed)
            print(harmful_table(rows))
            result["harmful"] = rows
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
