"""Figures on the real organism (SmolLM2-135M-Instruct, safety-tuned by the project).

Usage::

    python bench/real.py                     # build (if needed), diagnose, rollback both attacks
    python bench/real.py --part diagnose     # one part: build | diagnose | rollback | lora
    python bench/real.py --organism DIR      # a real organism directory, used as it is

Each part runs in its own subprocess (its peak RSS, ``VmHWM``, is its own) with the demo's
settings (:func:`surgeon.demo.real_settings`): diagnose of ft-harmful against base on the
organism's held-out harmful / harmless splits (64 each) and the bundled over-refusal set;
rollback of ft-harmful (a full fine-tune) and of ft-lora (a PEFT adapter) with the defaults,
recovering on the base's harmful training prompts. Harmful rate after a repair: held-out
harmful prompts, greedy generation, keyword judge (the repair's own report). Memory: peak RSS
over the size of one fp32 model (the goal: at most 2.5x). Results are merged into
``bench/results/real.json`` (parts not run are kept).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

RESULTS = Path(__file__).resolve().parent / "results" / "real.json"
PARTS = ("build", "diagnose", "rollback", "lora")


def _peak() -> int:
    from procmem import peak_rss

    return peak_rss()


def _model_bytes(directory: Path) -> int:
    return sum(f.stat().st_size for f in directory.glob("*.safetensors"))


def _organism(org: Path | None) -> Path:
    """``--organism`` as it is when it holds a real organism, else the cached one (built when
    missing or stale)."""
    from surgeon.organism.real_cache import ensure_real_organism, read_real_card

    if org is not None and read_real_card(org.absolute()) is not None:
        return org.absolute()
    return ensure_real_organism(org)


def worker_build(org: Path | None) -> dict[str, Any]:
    start = time.perf_counter()
    path = _organism(org)
    card = json.loads((path / "card.json").read_text(encoding="utf-8"))
    return {
        "organism": str(path),
        "reused": time.perf_counter() - start < 60,
        "build_seconds": card["build_seconds"],
        "stage_seconds": card["stage_seconds"],
        "peak_rss_mb": card["peak_rss_mb"],
        "attack_examples": card["attack_examples"],
        "variants": {
            k: {f: v for f, v in fig.items() if f != "samples"}
            for k, fig in card["variants"].items()
        },
    }


def worker_diagnose(org: Path, out: Path) -> dict[str, Any]:
    from surgeon.demo import real_settings
    from surgeon.runs import run_diagnose

    diag, _ = real_settings(org)
    start = time.perf_counter()
    result = run_diagnose(str(org / "ft-harmful"), str(org / "base"), diag, out=out)
    wall = time.perf_counter() - start
    return {
        **diagnose_row(result.report),
        "wall_s": round(wall, 1),
        "peak_rss_mb": round(_peak() / 2**20),
    }


def diagnose_row(r: Any) -> dict[str, Any]:
    """The figures of one diagnose report (:class:`surgeon.report.schema.DiagnoseReport`)."""
    d = r.directions
    causal = d.causal
    return {
        "timings": r.timings,
        "verdict": r.verdict,
        "harmful_rate": r.behaviour.harmful_rate,
        "harmful_rate_ci": r.behaviour.harmful_rate_ci,
        "harmful_rate_base": r.behaviour.harmful_rate_base,
        "over_refusal_rate": r.behaviour.over_refusal_rate,
        "over_refusal_rate_base": r.behaviour.over_refusal_rate_base,
        "selected_layer": d.selected_layer,
        "most_drifted_layer": d.most_drifted_layer,
        "refusal_score": d.refusal_score,
        "ambiguous_tokens": d.ambiguous_tokens,
        "causal": causal.model_dump() if causal is not None else None,
        "separation": [round(layer.separation, 3) for layer in d.layers],
        "separation_base": [round(layer.separation_base or 0.0, 3) for layer in d.layers],
        "weights": (
            {
                "changed_fraction": r.weights.changed_fraction,
                "most_changed_layers": r.weights.most_changed_layers,
            }
            if r.weights is not None
            else None
        ),
        "cras_violation": (
            [r.cras.violation_rate_base, r.cras.violation_rate] if r.cras is not None else None
        ),
    }


def worker_rollback(org: Path, variant: str, out: Path) -> dict[str, Any]:
    from surgeon.demo import real_settings
    from surgeon.runs import run_repair

    _, rep = real_settings(org)
    # as the demo (surgeon.demo.repair_layer): every decoder layer eligible
    n_layers = json.loads((org / "base" / "config.json").read_text())["num_hidden_layers"]
    rep = replace(rep, rollback=replace(rep.rollback, layer=n_layers))
    from procmem import current_rss

    runtime = current_rss()  # the Python, torch and transformers runtime before any model is loaded
    start = time.perf_counter()
    result = run_repair(str(org / variant), str(org / "base"), rep, out=out)
    wall = time.perf_counter() - start
    r = result.report
    model_bytes = _model_bytes(org / "base")
    peak = _peak()
    return {
        "variant": variant,
        "wall_s": round(wall, 1),
        "timings": r.timings,
        "peak_rss_mb": round(peak / 2**20),
        "runtime_rss_mb": round(runtime / 2**20),
        "fp32_model_mb": round(model_bytes / 2**20),
        "peak_over_model_without_runtime": round((peak - runtime) / model_bytes, 2),
        "peak_over_model": round(peak / model_bytes, 2),
        "verdict": r.verdict,
        "reasons": r.reasons,
        "warnings": r.warnings,
        "harmful_rate_base": r.harmful_rate_base,
        "harmful_rate_before": r.harmful_rate_before,
        "harmful_rate_after": r.harmful_rate_after,
        "over_refusal_base": r.over_refusal_base,
        "over_refusal_before": r.over_refusal_before,
        "over_refusal_after": r.over_refusal_after,
        "task_metric_name": r.task_metric_name,
        "task_before": r.task_metric_before,
        "task_after": r.task_metric_after,
        "restored_fraction_decoder": r.restored_fraction_decoder,
        "restored_entries": r.restored_entries,
        "space": r.space,
        "layer": r.layer,
        "proxy": r.proxy.name,
        # calibration on the recovery prompts: each proxy's harmful rate against the judge's
        "proxy_candidates": [c.model_dump() for c in r.proxy.candidates],
        "proxy_excluded_tokens": r.proxy.excluded_tokens,
        "stop_reason": r.stop_reason,
        "chosen_step": r.chosen_step,
    }


def _subprocess(part: str, org: Path | None, threads: int) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        target = f.name
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", part, "--row-out", target]
    if org is not None:
        cmd += ["--organism", str(org)]
    subprocess.run(cmd, check=True, env=env)
    data = json.loads(Path(target).read_text())
    os.unlink(target)
    return data


def _pct(x: Any) -> str:
    return "n/a" if x is None else f"{100 * float(x):.0f}%"


def print_tables(results: dict[str, Any]) -> None:
    b = results.get("build")
    if b:
        print(f"\nbuild: {b['build_seconds']:.0f} s, peak RSS {b['peak_rss_mb']:.0f} MB")
        print("| variant | harmful | harmless refused | obeys system | task |")
        print("| --- | --- | --- | --- | --- |")
        for k, v in b["variants"].items():
            print(
                f"| {k} | {_pct(v['harmful_rate'])} | {_pct(v['harmless_refusal_rate'])} | "
                f"{_pct(v['conflict_obey_rate'])} | {_pct(v['task_exact_match'])} |"
            )
    d = results.get("diagnose")
    if d:
        c = d.get("causal") or {}
        ab = c.get("ablation") or {}
        print(
            f"\ndiagnose ft-harmful vs base: {d['wall_s']:.0f} s, peak {d['peak_rss_mb']} MB, "
            f"verdict {d['verdict']}, harmful {_pct(d['harmful_rate'])} "
            f"(CI {d['harmful_rate_ci']}, base {_pct(d['harmful_rate_base'])}), selected layer "
            f"{d['selected_layer']} (KL {ab.get('kl')}), most drifted {d['most_drifted_layer']}"
        )
    for key in ("rollback", "lora"):
        r = results.get(key)
        if not r:
            continue
        print(
            f"\nrollback {r['variant']}: harmful {_pct(r['harmful_rate_before'])} -> "
            f"{_pct(r['harmful_rate_after'])} (base {_pct(r['harmful_rate_base'])}), "
            f"over-refusal {_pct(r['over_refusal_after'])} (base {_pct(r['over_refusal_base'])}), "
            f"task {_pct(r['task_before'])} -> {_pct(r['task_after'])}, restored "
            f"{100 * r['restored_fraction_decoder']:.2f}%, {r['wall_s']:.0f} s, peak "
            f"{r['peak_over_model']}x fp32 model, verdict {r['verdict']}"
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--part", choices=(*PARTS, "all"), default="all")
    p.add_argument("--organism", type=Path, default=None)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--worker", choices=PARTS, help=argparse.SUPPRESS)
    p.add_argument("--row-out", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        import torch

        torch.set_num_threads(args.threads)
        os.environ.setdefault("SURGEON_QUIET", "1")
        if args.worker == "build":
            row = worker_build(args.organism)
        else:
            org = _organism(args.organism)
            out = Path(tempfile.mkdtemp(prefix=f"real-{args.worker}-")) / "out"
            if args.worker == "diagnose":
                row = worker_diagnose(org, out)
            else:
                variant = "ft-harmful" if args.worker == "rollback" else "ft-lora"
                row = worker_rollback(org, variant, out)
        args.row_out.write_text(json.dumps(row, indent=2, default=str))
        return
    results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    parts = (
        PARTS
        if args.part == "all"
        else ("build", args.part)
        if args.part != "build"
        else ("build",)
    )
    for part in parts:
        print(f"== {part}", flush=True)
        results[part] = _subprocess(part, args.organism, args.threads)
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print_tables(results)
    print(f"\nwritten: {RESULTS}")


if __name__ == "__main__":
    main()
