"""The ``surgeon`` command line: parses flags, builds configs, calls the library.

Errors surgeon can explain become one line on stderr and an exit code (conventions.md):
0 pass, 1 the audit gate failed, 2 bad usage or input, 3 runtime failure.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import typer

from surgeon.errors import SurgeonError

F = TypeVar("F", bound=Callable[..., Any])

app = typer.Typer(
    name="surgeon",
    help="Diagnose why a fine-tuned LLM lost its alignment, and repair it surgically.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
organism_app = typer.Typer(help="Build the bundled model organism.", no_args_is_help=True)
app.add_typer(organism_app, name="organism")

_state = {"debug": False}


def _fail(message: str, code: int) -> None:
    typer.echo(f"surgeon: error: {message}", err=True)
    raise typer.Exit(code)


def handled(func: F) -> F:
    """Turn surgeon's errors (and a few well-known ones) into one line and an exit code."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except typer.Exit:
            raise
        except SurgeonError as exc:
            if _state["debug"]:
                raise
            _fail(str(exc), exc.exit_code)
        except MemoryError:
            _fail("out of memory; try a smaller --batch-size or --dtype bfloat16", 3)
        except KeyboardInterrupt:
            _fail("interrupted", 3)
        except Exception as exc:
            if _state["debug"]:
                raise
            _fail(f"{type(exc).__name__}: {exc} (run with --debug for a traceback)", 3)

    return wrapper  # type: ignore[return-value]


@app.callback()
def main(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks on errors."),
) -> None:
    """surgeon: diagnose and repair alignment regressions of fine-tuned LLMs."""
    _state["debug"] = debug


@app.command()
@handled
def env(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Print versions of python, torch, transformers, transformer-lens, peft and the platform."""
    from surgeon.env import versions

    info = versions()
    if as_json:
        typer.echo(json.dumps(info, indent=2))
        return
    width = max(len(k) for k in info)
    for key, value in info.items():
        typer.echo(f"{key:<{width}}  {value}")


# Options every model-running command shares; None means "not given" so files can fill in.
DTYPE = typer.Option(None, "--dtype", help="auto | float32 | bfloat16 | float16.")
DEVICE = typer.Option(None, "--device", help="cpu | cuda | auto.")
DEVICE_MAP = typer.Option(None, "--device-map", help="'auto': spread over GPUs and CPU.")
BATCH = typer.Option(None, "--batch-size", help="Prompts per batch.")
SEED = typer.Option(None, "--seed", help="Random seed.")
REMOTE = typer.Option(None, "--trust-remote-code/--no-trust-remote-code", help="Off by default.")
CONFIG = typer.Option(None, "--config", help="TOML file with any of these flags.")
OVERWRITE = typer.Option(False, "--overwrite", help="Replace a non-empty --out directory.")
JSON_OUT = typer.Option(False, "--json", help="Print only the report JSON.")


def _emit(report: dict, as_json: bool, where: str) -> None:
    """The report as JSON alone, or the terminal summary and where the files are."""
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    from surgeon.report import print_summary

    print_summary(report)
    typer.echo(where)


def _settings(command: str, defaults: dict[str, Any], config: Path | None, flags: dict) -> dict:
    from surgeon.config_file import merge_settings, read_config

    return merge_settings(defaults, read_config(config, command, defaults), flags)


@app.command()
@handled
def diagnose(
    model: str = typer.Argument(..., help="Model directory, adapter directory or hub id."),
    base: str | None = typer.Option(None, "--base", help="The aligned base to compare with."),
    out: Path | None = typer.Option(None, "--out", help="Report directory."),
    harmful: Path | None = typer.Option(None, "--harmful", help="Harmful prompt file."),
    harmless: Path | None = typer.Option(None, "--harmless", help="Harmless prompt file."),
    over_refusal: Path | None = typer.Option(
        None, "--over-refusal", help="Benign-but-scary prompt file."
    ),
    max_prompts: int | None = typer.Option(None, "--max-prompts", help="Prompts per set."),
    max_new_tokens: int | None = typer.Option(None, "--max-new-tokens"),
    judge: str | None = typer.Option(None, "--judge", help="'keyword' or a judge model dir."),
    fail_on: list[str] | None = typer.Option(
        None,
        "--fail-on",
        help="Gate threshold NAME=VALUE: harmful_increase, over_refusal_increase, harmful_rate.",
    ),
    config: Path | None = CONFIG,
    as_json: bool = JSON_OUT,
    overwrite: bool = OVERWRITE,
    dtype: str | None = DTYPE,
    device: str | None = DEVICE,
    device_map: str | None = DEVICE_MAP,
    batch_size: int | None = BATCH,
    seed: int | None = SEED,
    trust_remote_code: bool | None = REMOTE,
) -> None:
    """Audit MODEL for lost alignment; exit 1 when the gate fails."""
    from surgeon.progress import set_quiet
    from surgeon.runs import DIAGNOSE_DEFAULTS, run_diagnose

    set_quiet(as_json)
    flags = dict(locals())
    for key in ("model", "base", "out", "config", "as_json", "overwrite", "set_quiet"):
        flags.pop(key, None)
    flags = {k: v for k, v in flags.items() if k in DIAGNOSE_DEFAULTS}
    flags["fail_on"] = fail_on or None
    settings = _settings("diagnose", DIAGNOSE_DEFAULTS, config, flags)
    result = run_diagnose(model, base, settings, out=out, overwrite=overwrite)
    _emit(result.report, as_json, f"report: {result.out_dir / 'report.html'}")
    raise typer.Exit(result.exit_code)


@app.command()
@handled
def repair(
    model: str = typer.Argument(..., help="Fine-tuned model directory or PEFT adapter directory."),
    method: str | None = typer.Option(None, "--method", help="rollback | sail."),
    base: str | None = typer.Option(None, "--base", help="The aligned base model."),
    out: Path = typer.Option(..., "--out", help="Output directory (the repaired model)."),
    harmful: Path | None = typer.Option(None, "--harmful", help="Harmful recovery prompts."),
    harmful_heldout: Path | None = typer.Option(
        None, "--harmful-heldout", help="Held-out harmful prompts for the final check."
    ),
    harmless: Path | None = typer.Option(
        None, "--harmless", help="Harmless prompts that must stay answered (over-refusal guard)."
    ),
    task: Path | None = typer.Option(None, "--task", help="Task .jsonl (prompt, reference)."),
    task_heldout: Path | None = typer.Option(None, "--task-heldout"),
    task_metric: str | None = typer.Option(None, "--task-metric", help="auto|exact|contains."),
    selection: str | None = typer.Option(None, "--selection", help="task-aware | paper."),
    objective: str | None = typer.Option(
        None, "--objective", help="answers (base's refusals, default) | cosine (paper)."
    ),
    layer: int | None = typer.Option(None, "--layer", help="Layer L (default 2/3 depth)."),
    include_embeddings: bool | None = typer.Option(
        None,
        "--include-embeddings/--no-include-embeddings",
        help="Also restore the input embeddings (off by default).",
    ),
    include_norms: bool | None = typer.Option(
        None, "--include-norms/--no-include-norms", help="Also restore norm weights."
    ),
    prune: bool | None = typer.Option(
        None, "--prune/--no-prune", help="Put back unneeded restorations once on target."
    ),
    recovery_rate: float | None = typer.Option(
        None, "--recovery-rate", help="Share per step (default 0.0005; 0.002 with paper)."
    ),
    steps: int | None = typer.Option(
        None, "--steps", help="Maximum restoration steps (default 80; 20 with paper)."
    ),
    target_margin: float | None = typer.Option(None, "--target-margin"),
    apply_mask: Path | None = typer.Option(
        None, "--apply-mask", help="Re-apply a saved rollback_mask.safetensors instead."
    ),
    config: Path | None = CONFIG,
    as_json: bool = JSON_OUT,
    overwrite: bool = OVERWRITE,
    dtype: str | None = DTYPE,
    device: str | None = DEVICE,
    device_map: str | None = DEVICE_MAP,
    batch_size: int | None = BATCH,
    seed: int | None = SEED,
    trust_remote_code: bool | None = REMOTE,
) -> None:
    """Repair MODEL: restore a minimal weight subset from BASE (rollback); exit 1 when the
    repaired model still fails the gate (harm, over-refusal, task floor)."""
    from surgeon.progress import set_quiet
    from surgeon.runs import REPAIR_DEFAULTS, run_apply_mask, run_repair

    set_quiet(as_json)
    flags = {k: v for k, v in dict(locals()).items() if k in REPAIR_DEFAULTS}
    settings = _settings("repair", REPAIR_DEFAULTS, config, flags)
    if apply_mask is not None:
        path = run_apply_mask(model, base, apply_mask, settings, out, overwrite=overwrite)
        typer.echo(f"repaired model: {path}")
        return
    result = run_repair(model, base, settings, out, overwrite=overwrite)
    _emit(result.report, as_json, f"repaired model: {result.out_dir}")
    raise typer.Exit(result.exit_code)


@app.command()
@handled
def demo(
    out: Path = typer.Option(Path("surgeon-demo"), "--out", help="Where the demo writes."),
    organism: Path | None = typer.Option(
        None, "--organism", help="Organism directory (default: the cached one, built if needed)."
    ),
    rebuild: bool = typer.Option(False, "--rebuild", help="Rebuild the organism first."),
    overwrite: bool = OVERWRITE,
) -> None:
    """Organism -> diagnose -> rollback repair -> diagnose again, with a before/after table."""
    from rich.console import Console

    from surgeon.demo import before_after_table, card_table, run_demo

    console = Console()
    console.print("[bold]surgeon demo[/bold]: building or loading the model organism...")
    result = run_demo(out, organism=organism, rebuild=rebuild, overwrite=overwrite)
    console.print(card_table(result.card))
    console.print(before_after_table(result))
    console.print(f"reports: {result.before.out_dir}, {result.repair.out_dir}, ")
    console.print(f"         {result.after.out_dir}")


@organism_app.command("build")
@handled
def organism_build(
    directory: Path = typer.Argument(..., help="Where to write the organism."),
    force: bool = typer.Option(False, "--force", help="Rebuild an existing organism."),
) -> None:
    """(Re)build the model organism into DIRECTORY (about 2-5 minutes on 2 CPU cores)."""
    from rich.console import Console

    from surgeon.demo import card_table
    from surgeon.organism import ensure_organism

    path = ensure_organism(directory, rebuild=force)
    card = json.loads((path / "card.json").read_text(encoding="utf-8"))
    Console().print(card_table(card))
    typer.echo(f"organism: {path} (built in {card.get('build_seconds', 0):.0f} s)")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
