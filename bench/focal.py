"""Benchmark the focal-head probe: organism focal heads and drift, capture overhead, causal check.

Usage::

    python bench/focal.py [OUT.json] [--part probe|overhead|causal|all] [--threads N]

Parts:

probe
    The focal probe on the model organism pair (base and ft-conflict) over the 100 held-out
    normal/conflict pairs (``prompts/normal_heldout.jsonl`` row i with
    ``prompts/conflict_heldout.jsonl`` row i): load, one capture per model (rows kept), the
    three rules' scores and focal heads (top 10), and the drift base -> ft-conflict. Wall time
    against the issue's 60 s budget (which also covers CRAS, not measured here).
overhead
    ``probes.focal.capture_attention`` against a bare eager forward over the same 200 prompts
    in the same batches (both tokenise with ``surgeon.tokens.encode``; the probe also locates
    the system spans), on the organism base and on a bigger random-init Llama with the
    organism tokenizer: median of 5 interleaved repeats after a warm-up, target <= 1.5x.
causal
    The causal check on the organism base: the held-out conflict violation rate by greedy
    generation (24 new tokens, ``surgeon.constraints``), unablated, with each rule's top-10
    focal heads mean-ablated (means over the normal prompts' tokens) and with 10 random
    other heads over 5 seeded draws; also ft-conflict's unablated rate, and the score a
    uniform-attention head gets from the separation rule (the length confound: conflicting
    messages are longer).

Prints one table (part | measure | value | target | ok) and writes the JSON (default
``bench/results/focal.json``) with the machine's description.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
DEFAULT_OUT = HERE / "results" / "focal.json"
ORGANISM = ROOT / ".surgeon-cache" / "organism"
PARTS = ("probe", "overhead", "causal")
RULES = ("mass", "row", "conflict_mass")

PROBE_TARGET_S = 60.0
OVERHEAD_TARGET = 1.5
REPEATS = 5
BATCH = 16
BIG_SHAPE = {"hidden": 512, "layers": 8, "intermediate": 1376}
TOP_K = 10
DRAWS = 5
MAX_NEW_TOKENS = 24

Row = tuple[str, str, str, str, bool]


def _pairs(org: Path) -> list[Any]:
    from probes.focal import pairs_from_prompts
    from surgeon.prompts import load_prompts

    prompts = org / "prompts"
    return pairs_from_prompts(
        load_prompts(prompts / "normal_heldout.jsonl"),
        load_prompts(prompts / "conflict_heldout.jsonl"),
        where=str(prompts),
    )


def _heads(result: Any) -> list[list[float]]:
    return [[h.layer, h.head, round(h.score, 4)] for h in result.heads]


def run_probe() -> tuple[dict[str, Any], list[Row]]:
    from probes.cras import CrasConfig, RuleJudge, run_cras
    from probes.focal import FocalConfig, attention_drift, capture_pairs, focal_scores
    from surgeon.conflicts import organism_conflicts
    from surgeon.loading import load_model

    t0 = time.perf_counter()
    pairs = _pairs(ORGANISM)
    items = organism_conflicts(ORGANISM / "prompts")
    out: dict[str, Any] = {"n_pairs": len(pairs), "top_k": TOP_K, "variants": {}}
    results: dict[tuple[str, str], Any] = {}
    rows: list[Row] = []
    for variant in ("base", "ft-conflict"):
        t = time.perf_counter()
        loaded = load_model(ORGANISM / variant)
        t_load = time.perf_counter() - t
        t = time.perf_counter()
        normal, conflict = capture_pairs(loaded.model, loaded.tokenizer, pairs, keep_rows=True)
        t_capture = time.perf_counter() - t
        entry: dict[str, Any] = {"load_s": t_load, "capture_s": t_capture, "rules": {}}
        for rule in RULES:
            res = focal_scores(normal, conflict, FocalConfig(rule=rule, top_k=TOP_K))
            results[variant, rule] = res
            entry["rules"][rule] = {
                "heads": _heads(res),
                "layers": list(res.layers),
                "scores": [[round(float(x), 4) for x in r] for r in res.scores],
            }
            rows.append(
                (f"{variant} {rule} focal layers", ",".join(map(str, res.layers)), "", True)
            )
            top = " ".join(f"L{h.layer}H{h.head}" for h in res.heads[:5])
            rows.append((f"{variant} {rule} top 5", top, "", True))
        mass = results[variant, "mass"]
        entry["mass_normal"] = [[round(float(x), 4) for x in r] for r in mass.mass_normal]
        entry["mass_conflict"] = [[round(float(x), 4) for x in r] for r in mass.mass_conflict]
        entry["system_tokens"] = mass.system_tokens
        entry["prompt_tokens"] = [mass.prompt_tokens_normal, mass.prompt_tokens_conflict]
        out["variants"][variant] = entry
        rows.append((f"{variant} load + capture", f"{t_load + t_capture:.2f} s", "", True))
        t = time.perf_counter()
        cras = run_cras(
            loaded.model, loaded.tokenizer, items, CrasConfig(max_new_tokens=24), RuleJudge()
        )
        entry["cras_s"] = time.perf_counter() - t
        entry["cras"] = {"mean": cras.mean, "violation_rate": cras.violation_rate}
        rows.append(
            (
                f"{variant} CRAS (rule judge, 24 tokens)",
                f"{cras.mean:.2f}, violations {100 * cras.violation_rate:.0f}%, "
                f"{entry['cras_s']:.2f} s",
                "",
                True,
            )
        )
    out["drift"] = {}
    for rule in RULES:
        drift = attention_drift(results["base", rule], results["ft-conflict", rule], top=5)
        out["drift"][rule] = {
            "moved_most": [
                {
                    "layer": d.layer,
                    "head": d.head,
                    "score": d.score,
                    "score_base": d.score_base,
                    "delta": d.delta,
                    "conflict_mass_delta": d.conflict_mass_delta,
                }
                for d in drift.moved_most
            ],
            "shared_focal": [list(h) for h in drift.shared_focal],
        }
        moved = " ".join(f"L{d.layer}H{d.head}({d.delta:+.2f})" for d in drift.moved_most[:3])
        rows.append((f"drift {rule} moved most", moved, "", True))
    out["wall_s"] = time.perf_counter() - t0
    out["ok"] = out["wall_s"] <= PROBE_TARGET_S
    wall = f"{out['wall_s']:.1f} s"
    rows.append(
        ("wall (pair, 3 rules, drift, CRAS)", wall, f"<= {PROBE_TARGET_S:.0f} s", out["ok"])
    )
    return out, [("probe", *r) for r in rows]


def _big_model(tokenizer: Any) -> Any:
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    s = BIG_SHAPE
    config = LlamaConfig(
        hidden_size=s["hidden"],
        intermediate_size=s["intermediate"],
        num_hidden_layers=s["layers"],
        num_attention_heads=s["hidden"] // 64,
        num_key_value_heads=s["hidden"] // 128,
        vocab_size=len(tokenizer),
        max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config).eval()


def _time_capture(model: Any, tokenizer: Any, systems: list[str], users: list[str]) -> dict:
    import torch

    from probes.activations import forward_kwargs
    from probes.focal import capture_attention, eager_attention, system_prompts
    from surgeon.generation import model_device
    from surgeon.tokens import encode

    texts = list(system_prompts(tokenizer, systems, users).texts)
    batches = [texts[i : i + BATCH] for i in range(0, len(texts), BATCH)]
    device = model_device(model)
    extra = forward_kwargs(model)

    def bare() -> None:
        with eager_attention(model), torch.no_grad():
            for batch in batches:
                model(**encode(tokenizer, batch, device), use_cache=False, **extra)

    def probe() -> None:
        capture_attention(model, tokenizer, systems, users, batch_size=BATCH)

    def timed(fn: Callable[[], None]) -> float:
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0

    bare(), probe()  # warm-up
    times: dict[str, list[float]] = {"bare": [], "probe": []}
    for i in range(REPEATS):  # interleaved, alternating order, so load noise hits both
        order = (("bare", bare), ("probe", probe))
        for key, fn in order if i % 2 == 0 else order[::-1]:
            times[key].append(timed(fn))
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "n_params": sum(p.numel() for p in model.parameters()),
        "n_prompts": len(texts),
        "batch_size": BATCH,
        "bare_s": med["bare"],
        "probe_s": med["probe"],
        "ratio": med["probe"] / med["bare"],
        "ratio_of_minima": min(times["probe"]) / min(times["bare"]),
        "times": times,
    }


def run_overhead() -> tuple[dict[str, Any], list[Row]]:
    from surgeon.loading import load_model

    pairs = _pairs(ORGANISM)
    systems = [p.system for p in pairs] * 2
    users = [p.prompt for p in pairs] + [p.conflict for p in pairs]
    loaded = load_model(ORGANISM / "base")
    tok = loaded.tokenizer
    out = {
        "organism_base": _time_capture(loaded.model, tok, systems, users),
        "random_llama": _time_capture(_big_model(tok), tok, systems, users),
    }
    rows: list[Row] = []
    ok = True
    for key, label in (("organism_base", "organism base"), ("random_llama", "random Llama")):
        r = out[key]
        good = r["ratio"] <= OVERHEAD_TARGET
        ok = ok and good
        rows += [
            (f"{label} ({r['n_params'] / 1e6:.1f} M) bare eager", f"{r['bare_s']:.3f} s", "", True),
            (f"{label} capture", f"{r['probe_s']:.3f} s", "", True),
            (f"{label} capture / bare", f"{r['ratio']:.2f}x", f"<= {OVERHEAD_TARGET}x", good),
        ]
    out["ok"] = ok
    return out, [("overhead", *r) for r in rows]


def _violation_measure(model: Any, tokenizer: Any) -> Callable[[], float]:
    from surgeon.chat import format_prompt
    from surgeon.constraints import check_constraint, parse_constraint
    from surgeon.generation import generate
    from surgeon.prompts import load_prompts

    rows = load_prompts(ORGANISM / "prompts" / "conflict_heldout.jsonl")
    texts = [format_prompt(tokenizer, r.prompt, r.system).text for r in rows]
    specs = [parse_constraint(r.reference or "") for r in rows]

    def measure() -> float:
        outs = generate(model, tokenizer, texts, max_new_tokens=MAX_NEW_TOKENS, batch_size=50)
        broken = sum(not check_constraint(s, o) for s, o in zip(specs, outs, strict=True))
        return broken / len(outs)

    return measure


def run_causal() -> tuple[dict[str, Any], list[Row]]:
    import torch

    from probes.focal import FocalConfig, capture_pairs, focal_scores, score_mass
    from probes.head_ablation import causal_check, head_means
    from surgeon.chat import format_prompt
    from surgeon.loading import load_model

    t0 = time.perf_counter()
    pairs = _pairs(ORGANISM)
    rows: list[Row] = []
    out: dict[str, Any] = {"top_k": TOP_K, "draws": DRAWS, "rules": {}}
    ft = load_model(ORGANISM / "ft-conflict")
    out["violation_rate_ft_conflict"] = _violation_measure(ft.model, ft.tokenizer)()
    del ft
    loaded = load_model(ORGANISM / "base")
    model, tok = loaded.model, loaded.tokenizer
    normal, conflict = capture_pairs(model, tok, pairs, keep_rows=True)
    texts = [format_prompt(tok, p.prompt, p.system).text for p in pairs]
    means = head_means(model, tok, texts)
    measure = _violation_measure(model, tok)

    def uniform(cap: Any) -> torch.Tensor:
        share = [(e - s) / n for (s, e), n in zip(cap.spans, cap.lengths, strict=True)]
        return torch.tensor(share).view(-1, 1, 1)

    null = float(score_mass(uniform(normal), uniform(conflict)))
    scores_mass = focal_scores(normal, conflict, FocalConfig(rule="mass")).scores
    out["uniform_head_mass_score"] = null
    out["heads_below_uniform_mass_score"] = int((scores_mass < null).sum())
    for rule in RULES:
        res = focal_scores(normal, conflict, FocalConfig(rule=rule, top_k=TOP_K))
        check = causal_check(model, res.head_set(), means, measure, draws=DRAWS, min_change=0.02)
        out["rules"][rule] = check.to_json()
        out["violation_rate_base"] = check.baseline
        rows.append(
            (
                f"{rule}: focal / random change",
                f"{check.focal:+.2f} / {check.random_mean:+.2f} +- {check.random_std:.2f}",
                "focal beyond random",
                check.valid,
            )
        )
    rows = [
        (
            "violation rate base / ft-conflict",
            f"{out['violation_rate_base']:.2f} / {out['violation_rate_ft_conflict']:.2f}",
            "",
            True,
        ),
        (
            "uniform head's mass-rule score",
            f"{null:.2f} ({out['heads_below_uniform_mass_score']} of 24 heads below)",
            "",
            True,
        ),
        *rows,
    ]
    out["wall_s"] = time.perf_counter() - t0
    out["ok"] = out["rules"]["mass"]["valid"]
    return out, [("causal", *r) for r in rows]


RUNNERS = {"probe": run_probe, "overhead": run_overhead, "causal": run_causal}


def machine_info(threads: int) -> dict[str, Any]:
    import torch

    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": threads,
        "load_average": list(os.getloadavg()),
    }


def print_table(rows: list[Row]) -> None:
    head = ("part", "measure", "value", "target", "ok")
    cells = [head, *[(p, m, v, t, ("yes" if ok else "NO") if t else "") for p, m, v, t, ok in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(head))]
    for n, row in enumerate(cells):
        print(" | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        if n == 0:
            print("-+-".join("-" * w for w in widths))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--part", choices=(*PARTS, "all"), default="all")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import torch

    os.environ.setdefault("SURGEON_QUIET", "1")
    torch.set_num_threads(args.threads)
    parts = PARTS if args.part == "all" else (args.part,)
    results: dict[str, Any] = {}
    if args.part != "all" and args.out.is_file():  # one part: keep the others' last results
        results = json.loads(args.out.read_text())
    results["machine"] = machine_info(args.threads)
    rows: list[Row] = []
    for part in parts:
        t0 = time.perf_counter()
        res, part_rows = RUNNERS[part]()
        res["bench_wall_s"] = time.perf_counter() - t0
        results[part] = res
        rows += part_rows
        print(f"[{part} done in {res['bench_wall_s']:.0f} s]", file=sys.stderr)
    results["ok"] = all(results[p]["ok"] for p in PARTS if p in results)
    print_table(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
