"""Benchmark ``surgeon diagnose``: wall time, weight-comparison cost and probe overhead.

Usage::

    python bench/diagnose.py [OUT.json] [--part organism|weights|probe|all] [--threads N]

Parts (each measured in its own fresh subprocess):

organism
    ``surgeon.diagnose(ft-harmful, base=base)`` on the model organism with its own prompt splits
    (as ``surgeon demo`` runs it): wall time against a 60 s target, and the report's per-stage
    timings.
weights
    ``probes.weights.compare_weights`` on a pair of random-init ~500M-parameter fp32 Llama
    checkpoints (a few tensors of the second perturbed). Its time is compared with reading both
    files fully through ``safe_open(...).get_tensor`` (target <= 1.5x), its peak RSS above the
    RSS after imports with one checkpoint's file size (target <= 1.3x).
probe
    ``probes.activations.collect_activations`` (hooks on every layer) against a bare batched
    forward of the same prompts through the same model, on the organism base and on a bigger
    random-init Llama with the organism tokenizer: median of 5 repeats after one warm-up,
    target ratio <= 1.5x.

Prints one table (part | measure | value | target | ok) and writes the JSON (default
``bench/results/diagnose.json``) with the machine's description.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from procmem import current_rss, peak_rss, status_bytes

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_OUT = HERE / "results" / "diagnose.json"
ORGANISM = ROOT / ".surgeon-cache" / "organism"
PARTS = ("organism", "weights", "probe")

ORGANISM_TARGET_S = 60.0
WEIGHTS_TIME_TARGET = 1.5
WEIGHTS_MEMORY_TARGET = 1.3
PROBE_TARGET = 1.5

WEIGHTS_SHAPE = {"hidden": 1280, "layers": 20, "intermediate": 3456, "vocab": 32000}
PROBE_BIG_SHAPE = {"hidden": 512, "layers": 8, "intermediate": 1376}
PROBE_PROMPTS = 128
PROBE_BATCH = 16
PROBE_REPEATS = 5


# ----- memory helpers ----------------------------------------------------------------------


class _Sampler:
    """Polls ``/proc/self/status`` in a thread: the peaks of anonymous and file-backed RSS."""

    def __init__(self, interval: float = 0.005):
        self.interval = interval
        self.peak = {"RssAnon": 0, "RssFile": 0, "VmRSS": 0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for key in self.peak:
                self.peak[key] = max(self.peak[key], status_bytes(key))
            time.sleep(self.interval)

    def __enter__(self) -> _Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# ----- worker side -------------------------------------------------------------------------


def worker_organism(args: dict[str, Any]) -> dict[str, Any]:
    """Full diagnose of ft-harmful against base on the organism's own splits."""
    import surgeon
    from surgeon.demo import organism_prompts
    from surgeon.organism import ensure_organism

    org = ensure_organism(Path(args["organism"]))
    p = organism_prompts(org)
    config = surgeon.DiagnoseConfig(
        harmful=p["harmful_heldout"],
        harmless=p["harmless_train"],
        over_refusal=p["harmless_heldout"],
        seed=0,
    )
    t0 = time.perf_counter()
    report = surgeon.diagnose(str(org / "ft-harmful"), base=str(org / "base"), config=config)
    wall = time.perf_counter() - t0
    return {
        "wall_s": wall,
        "timings": dict(report.timings),
        "verdict": report.verdict,
        "harmful_rate": report.behaviour.harmful.rate,
        "n_harmful": report.behaviour.harmful.n,
        "n_over_refusal": report.behaviour.over_refusal.n,
        "peak_rss": peak_rss(),
    }


def worker_read(args: dict[str, Any]) -> dict[str, Any]:
    """Read every tensor of both checkpoints with ``safe_open(...).get_tensor``."""
    from safetensors import safe_open

    baseline = current_rss()
    total = 0
    t0 = time.perf_counter()
    with _Sampler() as sampler:
        for directory in (args["model"], args["base"]):
            with safe_open(str(Path(directory) / "model.safetensors"), framework="pt") as f:
                for name in f.keys():  # noqa: SIM118 (a safe_open handle, not a dict)
                    # get_tensor is zero-copy over an mmap: clone() actually reads the bytes
                    t = f.get_tensor(name).clone()
                    total += t.numel() * t.element_size()
                    del t
    wall = time.perf_counter() - t0
    return {
        "wall_s": wall,
        "bytes": total,
        "baseline_rss": baseline,
        "peak_rss": peak_rss(),
        "sampled_peaks": sampler.peak,
    }


def worker_compare(args: dict[str, Any]) -> dict[str, Any]:
    """``compare_weights`` on the pair, with RSS right before the call and its peak."""
    from probes.weights import compare_weights

    baseline = current_rss()
    t0 = time.perf_counter()
    with _Sampler() as sampler:
        result = compare_weights(args["model"], args["base"])
    wall = time.perf_counter() - t0
    return {
        "wall_s": wall,
        "baseline_rss": baseline,
        "peak_rss": peak_rss(),
        "sampled_peaks": sampler.peak,
        "n_params": result.n_params,
        "n_changed": result.n_changed,
        "changed_fraction": result.changed_fraction,
        "modules_moved": sum(m.rel_delta > 0 for m in result.modules),
    }


def _probe_texts(org: Path, tokenizer: Any, n: int) -> list[str]:
    from surgeon.chat import format_prompts
    from surgeon.prompts import load_prompts

    ps = [
        *load_prompts(org / "prompts" / "harmful_heldout.jsonl"),
        *load_prompts(org / "prompts" / "harmless_heldout.jsonl"),
    ][:n]
    return format_prompts(tokenizer, [p.prompt for p in ps], [p.system for p in ps])


def _big_model(tokenizer: Any) -> Any:
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    s = PROBE_BIG_SHAPE
    config = LlamaConfig(
        hidden_size=s["hidden"],
        intermediate_size=s["intermediate"],
        num_hidden_layers=s["layers"],
        num_attention_heads=s["hidden"] // 64,
        num_key_value_heads=s["hidden"] // 64,
        vocab_size=len(tokenizer),
        max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config).eval()


def _time_probe(model: Any, tokenizer: Any, texts: list[str]) -> dict[str, Any]:
    """Median seconds of collect_activations and of a bare forward loop over the same batches."""
    import torch

    from probes.activations import collect_activations
    from surgeon.generation import model_device
    from surgeon.tokens import encode

    device = model_device(model)
    batches = [texts[i : i + PROBE_BATCH] for i in range(0, len(texts), PROBE_BATCH)]

    def bare() -> None:
        with torch.no_grad():
            for batch in batches:
                model(**encode(tokenizer, batch, device))

    def probe() -> None:
        collect_activations(model, tokenizer, texts, positions=1, batch_size=PROBE_BATCH)

    def timed(fn: Callable[[], None]) -> float:
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0

    bare(), probe()  # warm-up
    times: dict[str, list[float]] = {"bare": [], "probe": []}
    for i in range(PROBE_REPEATS):  # interleaved, alternating order, so load noise hits both
        order = (
            (("bare", bare), ("probe", probe)) if i % 2 == 0 else (("probe", probe), ("bare", bare))
        )
        for key, fn in order:
            times[key].append(timed(fn))
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "n_params": sum(p.numel() for p in model.parameters()),
        "n_prompts": len(texts),
        "batch_size": PROBE_BATCH,
        "bare_s": med["bare"],
        "probe_s": med["probe"],
        "ratio": med["probe"] / med["bare"],
        "ratio_of_minima": min(times["probe"]) / min(times["bare"]),
        "times": times,
    }


def worker_probe(args: dict[str, Any]) -> dict[str, Any]:
    """Probe overhead on the organism base and on a bigger random-init Llama."""
    from surgeon.loading import load_model
    from surgeon.organism import ensure_organism

    org = ensure_organism(Path(args["organism"]))
    loaded = load_model(str(org / "base"))
    tok = loaded.tokenizer
    texts = _probe_texts(org, tok, PROBE_PROMPTS)
    out = {"organism_base": _time_probe(loaded.model.eval(), tok, texts)}
    del loaded
    out["random_llama"] = _time_probe(_big_model(tok), tok, texts)
    return out


def worker_pair(args: dict[str, Any]) -> dict[str, Any]:
    """Build the random-init checkpoint pair (in a worker, so the driver's RSS stays small)."""
    return _make_pair(Path(args["root"]))


WORKERS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "pair": worker_pair,
    "organism": worker_organism,
    "read": worker_read,
    "compare": worker_compare,
    "probe": worker_probe,
}


# ----- driver side -------------------------------------------------------------------------


def _subprocess(name: str, args: dict[str, Any], threads: int) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        target = f.name
    env = {**os.environ, "SURGEON_QUIET": "1", "PYTHONPATH": str(ROOT)}
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        name,
        "--worker-args",
        json.dumps(args),
        "--worker-out",
        target,
        "--threads",
        str(threads),
    ]
    try:
        subprocess.run(cmd, check=True, env=env, cwd=ROOT)
        return json.loads(Path(target).read_text())
    finally:
        os.unlink(target)


def _make_pair(root: Path) -> dict[str, Any]:
    """A random-init ~500M fp32 Llama saved twice, a few tensors perturbed in the second."""
    import gc

    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    s = WEIGHTS_SHAPE
    config = LlamaConfig(
        hidden_size=s["hidden"],
        intermediate_size=s["intermediate"],
        num_hidden_layers=s["layers"],
        num_attention_heads=s["hidden"] // 64,
        num_key_value_heads=s["hidden"] // 64,
        vocab_size=s["vocab"],
        max_position_embeddings=512,
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    n_params = sum(p.numel() for p in model.parameters())
    model.save_pretrained(root / "base")
    perturbed = []
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if any(f"layers.{i}." in name for i in (5, 12)) and p.ndim == 2:
                p.add_(0.01 * p.std() * torch.randn(p.shape, generator=gen))
                perturbed.append(name)
    model.save_pretrained(root / "ft")
    del model
    gc.collect()
    return {
        "n_params": n_params,
        "shape": s,
        "perturbed_tensors": len(perturbed),
        "file_bytes": (root / "base" / "model.safetensors").stat().st_size,
    }


def run_organism(threads: int) -> tuple[dict[str, Any], list[tuple[str, str, str, str, bool]]]:
    t0 = time.perf_counter()
    res = _subprocess("organism", {"organism": str(ORGANISM)}, threads)
    res["process_wall_s"] = time.perf_counter() - t0
    rows = [
        (
            "diagnose wall",
            f"{res['wall_s']:.1f} s",
            f"<= {ORGANISM_TARGET_S:.0f} s",
            res["wall_s"] <= ORGANISM_TARGET_S,
        )
    ]
    rows += [(f"  {k}", f"{v:.2f} s", "", True) for k, v in res["timings"].items()]
    rows.append(("process wall (imports incl.)", f"{res['process_wall_s']:.1f} s", "", True))
    res["ok"] = rows[0][3]
    return res, [("organism", *r) for r in rows]


def run_weights(threads: int) -> tuple[dict[str, Any], list[tuple[str, str, str, str, bool]]]:
    with tempfile.TemporaryDirectory(prefix="surgeon-bench-weights-") as tmp:
        root = Path(tmp)
        pair = _subprocess("pair", {"root": str(root)}, threads)
        args = {"model": str(root / "ft"), "base": str(root / "base")}
        read_1 = _subprocess("read", args, threads)
        compare = _subprocess("compare", args, threads)
        read_2 = _subprocess("read", args, threads)
    read_s = min(read_1["wall_s"], read_2["wall_s"])
    size = pair["file_bytes"]
    above = compare["peak_rss"] - compare["baseline_rss"]
    time_ratio = compare["wall_s"] / read_s
    mem_ratio = above / size
    res = {
        **pair,
        "read_both": [read_1, read_2],
        "read_both_s": read_s,
        "compare": compare,
        "time_ratio": time_ratio,
        "memory_above_baseline": above,
        "memory_ratio": mem_ratio,
        "ok": time_ratio <= WEIGHTS_TIME_TARGET and mem_ratio <= WEIGHTS_MEMORY_TARGET,
    }
    gib = 2**30
    rows = [
        ("params", f"{pair['n_params'] / 1e6:.1f} M", "~500 M", True),
        ("one checkpoint file", f"{size / gib:.2f} GiB", "", True),
        ("read both (safe_open)", f"{read_s:.2f} s", "", True),
        ("compare_weights", f"{compare['wall_s']:.2f} s", "", True),
        (
            "time / read both",
            f"{time_ratio:.2f}x",
            f"<= {WEIGHTS_TIME_TARGET}x",
            time_ratio <= WEIGHTS_TIME_TARGET,
        ),
        ("peak RSS above imports", f"{above / gib:.2f} GiB", "", True),
        (
            "peak RSS / checkpoint",
            f"{mem_ratio:.2f}x",
            f"<= {WEIGHTS_MEMORY_TARGET}x",
            mem_ratio <= WEIGHTS_MEMORY_TARGET,
        ),
        (
            "  sampled anon / file RSS",
            f"{compare['sampled_peaks']['RssAnon'] / gib:.2f} / "
            f"{compare['sampled_peaks']['RssFile'] / gib:.2f} GiB",
            "",
            True,
        ),
    ]
    return res, [("weights", *r) for r in rows]


def run_probe(threads: int) -> tuple[dict[str, Any], list[tuple[str, str, str, str, bool]]]:
    res = _subprocess("probe", {"organism": str(ORGANISM)}, threads)
    rows = []
    ok = True
    for key, label in (("organism_base", "organism base"), ("random_llama", "random Llama")):
        r = res[key]
        good = r["ratio"] <= PROBE_TARGET
        ok = ok and good
        rows += [
            (f"{label} ({r['n_params'] / 1e6:.1f} M) bare", f"{r['bare_s']:.3f} s", "", True),
            (f"{label} probe", f"{r['probe_s']:.3f} s", "", True),
            (f"{label} probe / bare", f"{r['ratio']:.2f}x", f"<= {PROBE_TARGET}x", good),
        ]
    res["ok"] = ok
    return res, [("probe", *r) for r in rows]


RUNNERS = {"organism": run_organism, "weights": run_weights, "probe": run_probe}


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


def print_table(rows: list[tuple[str, str, str, str, bool]]) -> None:
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
    parser.add_argument("--worker", choices=tuple(WORKERS), help=argparse.SUPPRESS)
    parser.add_argument("--worker-args", default="{}", help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        import torch

        torch.set_num_threads(args.threads)
        result = WORKERS[args.worker](json.loads(args.worker_args))
        args.worker_out.write_text(json.dumps(result))
        return

    parts = PARTS if args.part == "all" else (args.part,)
    results: dict[str, Any] = {}
    if args.out.is_file():  # a part that is not run keeps its last results
        results = json.loads(args.out.read_text(encoding="utf-8"))
    results["machine"] = machine_info(args.threads)
    rows: list[tuple[str, str, str, str, bool]] = []
    for part in parts:
        t0 = time.perf_counter()
        res, part_rows = RUNNERS[part](args.threads)
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
