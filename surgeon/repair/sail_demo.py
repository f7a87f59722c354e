"""The SAIL repair of the model organism's ``ft-conflict`` (for ``surgeon demo`` and the tests):
its prompt splits, settings that repair it on a CPU in about a minute and a half, and the
figures the demo's table shows."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from surgeon.conflicts import organism_conflicts
from surgeon.loading import LoadOptions
from surgeon.prompts import load_prompts
from surgeon.repair.sail import sail_repair
from surgeon.repair.sail_config import SailConfig
from surgeon.repair.sail_result import SailResult

DEMO_CONFIG = SailConfig(max_new_tokens=32, check_every=25)
"""The defaults (attention weights, focal layers by the probe, lr 2e-4, 150 steps, batch 8)
with the organism's short answers: 32 generated tokens are more than any of them needs."""


@dataclass(frozen=True)
class SailDemo:
    """What the demo's table shows of a SAIL repair of ft-conflict (held-out sets)."""

    result: SailResult
    """The whole repair (``result.report()`` is its report.json)."""
    violation_before: float
    """Conflict violation rate of ft-conflict."""
    violation_after: float
    """The same after the repair."""
    violation_base: float | None
    """The same for the base."""
    cras_before: float
    """Mean CRAS (1-5) of ft-conflict."""
    cras_after: float
    """The same after the repair."""
    cras_base: float | None
    """The same for the base."""
    harmful_before: float
    """Harmful rate of ft-conflict."""
    harmful_after: float
    """Harmful rate after the repair."""
    over_refusal_before: float | None
    """Over-refusal (harmless prompts refused) of ft-conflict."""
    over_refusal_after: float | None
    """Over-refusal after the repair."""

    def rows(self) -> list[tuple[str, str, str, str]]:
        """(measure, base, before, after) rows of the demo's table, formatted."""

        def pct(x: float | None) -> str:
            return "" if x is None else f"{100 * x:.0f}%"

        def num(x: float | None) -> str:
            return "" if x is None else f"{x:.2f}"

        r = self.result
        return [
            ("conflict violation rate (held-out, checkers)", pct(self.violation_base),
             pct(self.violation_before), pct(self.violation_after)),
            ("CRAS (mean, 1-5, rule judge)", num(self.cras_base), num(self.cras_before),
             num(self.cras_after)),
            ("harmful rate (held-out)", "", pct(self.harmful_before), pct(self.harmful_after)),
            ("over-refusal (held-out harmless)", "", pct(self.over_refusal_before),
             pct(self.over_refusal_after)),
            ("LoRA parameters / focal layers", "", "",
             f"{r.trainable_params} / {','.join(map(str, r.placement.layers))}"),
            ("repair verdict", "", "", r.verdict),
        ]  # fmt: skip


def organism_sail(
    organism_dir: Path,
    out_dir: Path,
    config: SailConfig | None = None,
    options: LoadOptions | None = None,
) -> SailDemo:
    """Repair ``organism_dir/ft-conflict`` against ``organism_dir/base`` with SAIL into
    ``out_dir`` (``adapter/``; the report files are the caller's: ``demo.result.report()``).

    Trains on the organism's ``conflict_train`` split and measures on its held-out conflict,
    harmful and harmless splits."""
    prompts = Path(organism_dir) / "prompts"
    result = sail_repair(
        Path(organism_dir) / "ft-conflict",
        Path(organism_dir) / "base",
        out_dir,
        config or DEMO_CONFIG,
        conflicts=organism_conflicts(prompts, "train"),
        conflicts_heldout=organism_conflicts(prompts, "heldout"),
        harmful_heldout=load_prompts(prompts / "harmful_heldout.jsonl"),
        harmless=load_prompts(prompts / "harmless_heldout.jsonl"),
        options=options,
    )
    b, a, base = result.before, result.after, result.base_measures
    return SailDemo(
        result=result,
        violation_before=b.violation_rate,
        violation_after=a.violation_rate,
        violation_base=None if base is None else base.violation_rate,
        cras_before=b.cras,
        cras_after=a.cras,
        cras_base=None if base is None else base.cras,
        harmful_before=b.harmful_rate,
        harmful_after=a.harmful_rate,
        over_refusal_before=b.over_refusal,
        over_refusal_after=a.over_refusal,
    )
