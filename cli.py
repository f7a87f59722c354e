"""The ``surgeon`` command line: parses flags, builds configs, calls the library.

Errors surgeon can explain become one line on stderr and an exit code (conventions.md):
0 pass, 1 the audit gate failed, 2 bad usage or input, 3 runtime failure.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import typer

from surgeon.errors import InputError, SurgeonError

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


def _not_implemented(name: str) -> None:
    raise InputError(f"'{name}' is not implemented yet")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@handled
def diagnose() -> None:
    """Probe a fine-tuned model for lost alignment (not implemented yet)."""
    _not_implemented("surgeon diagnose")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@handled
def repair() -> None:
    """Repair a fine-tuned model (not implemented yet)."""
    _not_implemented("surgeon repair")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@handled
def demo() -> None:
    """Run the whole story on the bundled model organism (not implemented yet)."""
    _not_implemented("surgeon demo")


@organism_app.command("build", context_settings={"allow_extra_args": True})
@handled
def organism_build() -> None:
    """(Re)build the model organism into DIR (not implemented yet)."""
    _not_implemented("surgeon organism build")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
