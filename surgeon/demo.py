"""``surgeon demo``: the whole story on the model organism.

Build (or reuse) the organism, print its card, diagnose ``ft-harmful`` against ``base``, repair
it with rollback, diagnose the repaired model again; then the same for ``ft-conflict`` with the
SAIL repair; and print a before/after table of each. Each step writes its usual output
directory under ``--out``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from rich.table import Table

from surgeon.diagnosis import DiagnoseConfig
from surgeon.outdir import check_output_target
from surgeon.repair.rollback_config import RollbackConfig
from surgeon.repair.rollback_run import RepairFiles, RollbackRun
from surgeon.report.schema import DiagnoseReport, RollbackReport
from surgeon.runs import RunOutput, run_diagnose, run_repair

CARD_COLUMNS = (
    ("harmful_rate", "harmful rate"),
    ("harmless_refusal_rate", "harmless refused"),
    ("conflict_obey_rate", "obeys system"),
    ("task_exact_match", "task exact-match"),
)


@dataclass(frozen=True)
class DemoResult:
    """What the demo measured."""

    organism: Path
    """The organism directory used."""
    card: dict[str, Any]
    """Its card.json."""
    before: RunOutput
    """Diagnose of ft-harmful against base."""
    repair: RunOutput
    """The rollback repair of ft-harmful."""
    after: RunOutput
    """Diagnose of the repaired model against base."""
    sail_before: RunOutput | None
    """Diagnose of ft-conflict against base (the organism's held-out conflicts); None when the
    demo ran without SAIL."""
    sail: RunOutput | None
    """The SAIL repair of ft-conflict (``--merge``)."""
    sail_after: RunOutput | None
    """Diagnose of the SAIL-repaired (merged) model against base."""


def organism_prompts(organism: Path) -> dict[str, Path]:
    """The organism's held-out and training splits, by role."""
    p = organism / "prompts"
    return {
        "harmful_heldout": p / "harmful_heldout.jsonl",
        "harmful_recovery": p / "harmful_recovery.jsonl",
        "harmful_train": p / "harmful_train.jsonl",
        "harmless_heldout": p / "harmless_heldout.jsonl",
        "harmless_train": p / "harmless_train.jsonl",
        "task_train": p / "task_train.jsonl",
        "task_heldout": p / "task_heldout.jsonl",
    }


def demo_settings(organism: Path, seed: int = 0) -> tuple[DiagnoseConfig, RollbackRun]:
    """Diagnose and repair settings that read the organism's own prompt splits.

    The organism speaks a small templated language, so its held-out harmful and harmless
    splits stand in for the bundled sets; its held-out harmless split is the over-refusal set;
    its held-out conflicts (``--conflicts`` of its ``prompts/``) are answered in 24 tokens (its
    context is 64).
    """
    p = organism_prompts(organism)
    diagnose = DiagnoseConfig(
        harmful=p["harmful_heldout"],
        harmless=p["harmless_train"],
        over_refusal=p["harmless_heldout"],
        conflicts=organism / "prompts",
        conflict_max_new_tokens=24,
        max_conflicts=100,
        seed=seed,
    )
    # recovery prompts: rollback samples n_recovery (256) of the 1,272 training prompts; the
    # organism's fine-tunes changed the embeddings too (ft-lora's adapter saves a trained
    # copy): rollback may restore their entries, which count against the budget
    return diagnose, _rollback_run(p, RollbackConfig(include_embeddings=True, seed=seed))


def _rollback_run(p: Mapping[str, Path], rollback: RollbackConfig) -> RollbackRun:
    """Rollback on an organism's splits: recovery on the harmful training prompts, the
    harmless training prompts as the guard, the task's training and held-out items."""
    return RollbackRun(
        files=RepairFiles(
            harmful=p["harmful_train"],
            harmful_heldout=p["harmful_heldout"],
            harmless=p["harmless_train"],
            task=p["task_train"],
            task_heldout=p["task_heldout"],
        ),
        rollback=rollback,
    )


def real_settings(organism: Path, seed: int = 0) -> tuple[DiagnoseConfig, RollbackRun]:
    """Diagnose and repair settings for the real organism (SmolLM2-135M-Instruct).

    It speaks English, so diagnose measures on its held-out harmful and harmless splits (64
    each) and the bundled over-refusal set, with fewer conflicts and causal candidates than the
    defaults and no focal heads (the CPU budget of a 30-layer model). Rollback recovers on 32
    of the 144 harmful prompts the base was taught to refuse (the attack's among them), guards
    the harmless training prompts (disjoint from the held-out ones), and doubles its steps
    (``step_growth=2``).
    """
    p = organism_prompts(organism)
    diagnose = DiagnoseConfig(
        harmful=p["harmful_heldout"],
        harmless=p["harmless_heldout"],
        conflicts=organism / "prompts",
        # 30 layers: 8 evenly spaced causal candidates; 16 conflicts answered in 48 tokens and
        # no focal heads (conflict answers were 80% of a 15-minute diagnose on 2 cores, and
        # the instruct model obeys 12% of system prompts: there is little to localise)
        causal_layers=8,
        max_conflicts=16,
        conflict_max_new_tokens=48,
        focal=False,
        # batches of 32: greedy answers to 64 held-out harmful prompts took 15.4 s instead of
        # 25.7 s at 16, the same answers (2 cores; 64 took 15.9 s)
        batch_size=32,
        seed=seed,
    )
    # 32 of the 144 recovery prompts (and 32 guard prompts): each step backpropagates through
    # all of them; steps that double (0.05%, 0.1%, 0.2%... of the eligible entries) reach the
    # target in a few of a 30-layer model's minute-long steps on 2 cores, and pruning takes
    # back what the last step overshot; a target margin of one recovery prompt (the default
    # 2 points is less than one of 32)
    rollback = RollbackConfig(n_recovery=32, step_growth=2.0, target_margin=0.032, seed=seed)
    return diagnose, _rollback_run(p, rollback)


def repair_layer(diagnosis: DiagnoseReport) -> int | None:
    """Rollback's L for the demo: every decoder layer (entries in layers ``0..L-1`` may be
    restored). Narrower bounds left the repair's ceiling above its target on an organism: the
    published 2/3 of the depth on the real one (restoring all of layers 0-19 still left 88% of
    the recovery prompts answered), and the diagnosis's most drifted layer on the small one
    built with MKL's reproducible branch (layer 1, so L = 2: 100% answered). The gradient
    selection, not L, keeps the restored share small. None (no layers in the diagnosis)
    keeps rollback's default."""
    return len(diagnosis.directions.layers) or None


def run_demo(
    out: Path,
    organism: Path | None = None,
    rebuild: bool = False,
    overwrite: bool = False,
    *,
    real: bool = False,
    sail: bool = True,
) -> DemoResult:
    """Run the story; ``organism`` None uses (and if needed builds) the cached organism.

    ``real``: the real organism (SmolLM2-135M-Instruct, :mod:`surgeon.organism.real`) instead
    of the small one. ``sail``: also diagnose ft-conflict, repair it with SAIL and diagnose it
    again.
    """
    import json

    from surgeon.organism import ensure_organism
    from surgeon.organism.real_cache import ensure_real_organism

    out = Path(out)
    check_output_target(out, overwrite=overwrite)
    if overwrite and out.exists():
        import shutil

        shutil.rmtree(out)
    if real:
        organism = ensure_real_organism(organism, rebuild=rebuild)
        diag, rep = real_settings(organism)
    else:
        organism = ensure_organism(organism, rebuild=rebuild)
        diag, rep = demo_settings(organism)
    card = json.loads((organism / "card.json").read_text(encoding="utf-8"))
    out.mkdir(parents=True, exist_ok=True)
    base, ft = str(organism / "base"), str(organism / "ft-harmful")
    before = run_diagnose(ft, base, diag, out=out / "diagnose-before")
    assert isinstance(before.report, DiagnoseReport)
    rep = replace(rep, rollback=replace(rep.rollback, layer=repair_layer(before.report)))
    repaired = run_repair(ft, base, rep, out=out / "repaired")
    after = run_diagnose(str(repaired.out_dir), base, diag, out=out / "diagnose-after")
    if not sail:
        return DemoResult(organism, card, before, repaired, after, None, None, None)
    conflict = str(organism / "ft-conflict")
    sail_before = run_diagnose(conflict, base, diag, out=out / "sail-diagnose-before")
    sail = run_repair(conflict, base, sail_settings(organism), out=out / "sail-repaired")
    merged = str(sail.out_dir / "merged")
    sail_after = run_diagnose(merged, base, diag, out=out / "sail-diagnose-after")
    return DemoResult(organism, card, before, repaired, after, sail_before, sail, sail_after)


def sail_settings(organism: Path) -> Any:
    """SAIL on ft-conflict: trained on the organism's conflict training split, measured on its
    held-out splits, the merged model written for the diagnosis after."""
    from surgeon.repair.sail_demo import DEMO_CONFIG
    from surgeon.repair.sail_run import SailFiles, SailRun

    p = organism_prompts(organism)
    return SailRun(
        files=SailFiles(
            conflicts=organism / "prompts",
            harmful_heldout=p["harmful_heldout"],
            harmless=p["harmless_heldout"],
        ),
        sail=replace(DEMO_CONFIG, merge=True),
    )


def _pct(value: Any) -> str:
    return "n/a" if value is None else f"{100 * float(value):.1f}%"


def card_table(card: Mapping[str, Any]) -> Table:
    """The organism's card: measured behaviour of every variant on held-out prompts."""
    kind = "real model organism" if card.get("kind") == "real" else "model organism"
    table = Table(title=f"{kind} ({card.get('n_params', 0):,} parameters per model)")
    table.add_column("variant")
    for _, label in CARD_COLUMNS:
        table.add_column(label, justify="right")
    for name, figures in card.get("variants", {}).items():
        table.add_row(name, *(_pct(figures.get(key)) for key, _ in CARD_COLUMNS))
    return table


def before_after_table(result: DemoResult) -> Table:
    """Harmful rate, over-refusal, task metric and weights touched, before and after repair."""
    b, a, r = result.before.report, result.after.report, result.repair.report
    assert isinstance(b, DiagnoseReport) and isinstance(a, DiagnoseReport)
    assert isinstance(r, RollbackReport)
    table = Table(title="ft-harmful: before and after rollback repair")
    for column in ("", "base", "before", "after"):
        table.add_column(column, justify="right" if column else "left")
    bb, ab = b.behaviour, a.behaviour
    table.add_row(
        "harmful rate (held-out, generated)",
        _pct(bb.harmful_rate_base),
        _pct(bb.harmful_rate),
        _pct(ab.harmful_rate),
    )
    table.add_row(
        "over-refusal (held-out harmless)",
        _pct(bb.over_refusal_rate_base),
        _pct(bb.over_refusal_rate),
        _pct(ab.over_refusal_rate),
    )
    table.add_row("task metric", "", _pct(r.task_metric_before), _pct(r.task_metric_after))
    table.add_row("restored / decoder-layer weights", "", "", _pct(r.restored_fraction_decoder))
    if b.cras is not None and a.cras is not None:
        table.add_row(
            "conflict violation rate (held-out)",
            _pct(b.cras.violation_rate_base),
            _pct(b.cras.violation_rate),
            _pct(a.cras.violation_rate),
        )
    table.add_row("verdict", "", b.verdict, a.verdict)
    return table


def sail_table(result: DemoResult) -> Table:
    """Conflict violations, CRAS and harm of ft-conflict before and after the SAIL repair, as
    the two diagnoses measured them."""
    assert result.sail_before is not None and result.sail_after is not None
    b, a = result.sail_before.report, result.sail_after.report
    assert isinstance(b, DiagnoseReport) and isinstance(a, DiagnoseReport)
    table = Table(title="ft-conflict: before and after SAIL repair")
    for column in ("", "base", "before", "after"):
        table.add_column(column, justify="right" if column else "left")
    bc, ac = b.cras, a.cras
    if bc is not None and ac is not None:
        table.add_row(
            "conflict violation rate (held-out)",
            _pct(bc.violation_rate_base),
            _pct(bc.violation_rate),
            _pct(ac.violation_rate),
        )
        table.add_row(
            "CRAS (mean, 1-5)",
            _num(bc.mean_base),
            _num(bc.mean),
            _num(ac.mean),
        )
    table.add_row(
        "harmful rate (held-out, generated)",
        _pct(b.behaviour.harmful_rate_base),
        _pct(b.behaviour.harmful_rate),
        _pct(a.behaviour.harmful_rate),
    )
    table.add_row(
        "over-refusal (held-out harmless)",
        _pct(b.behaviour.over_refusal_rate_base),
        _pct(b.behaviour.over_refusal_rate),
        _pct(a.behaviour.over_refusal_rate),
    )
    focal = b.focal.layers if b.focal is not None else []
    table.add_row("focal layers (LoRA placed there)", "", ",".join(map(str, focal)), "")
    table.add_row("verdict", "", b.verdict, a.verdict)
    return table


def _num(value: Any) -> str:
    return "n/a" if value is None else f"{float(value):.2f}"
