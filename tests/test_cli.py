"""The command line: help lists commands, env prints versions, stubs say so and exit 2."""

from __future__ import annotations

import subprocess
import sys

from typer.testing import CliRunner

from cli import app

runner = CliRunner()


def test_help_lists_commands() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("diagnose", "repair", "demo", "organism", "env"):
        assert command in result.output


def test_env_prints_versions() -> None:
    result = runner.invoke(app, ["env"])
    assert result.exit_code == 0
    for name in ("python", "torch", "transformers", "transformer-lens", "peft", "platform"):
        assert name in result.output


def test_console_script_runs() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", "from cli import app; app()", "env", "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert '"torch"' in proc.stdout


def test_the_command_line_starts_without_torch() -> None:
    """Building every command's flags reads the typed configs only: ``surgeon --help`` and
    ``surgeon env`` must not pay for torch, transformers, matplotlib or the report models."""
    code = (
        "import sys, cli; "
        "print(sorted(m for m in ('torch', 'transformers', 'matplotlib', 'pydantic') "
        "if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "[]"
