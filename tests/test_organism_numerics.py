"""The small organism's build runs with pinned CPU kernels (AVX2 on any x86 processor that has
it), so every machine builds the same weights and the README's card: an AVX-512 machine's own
kernels build a different organism (bench/NOTES.md)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from surgeon.errors import RuntimeFailure
from surgeon.organism import OrganismConfig, is_complete, numerics

PINNED_HERE = numerics.expected() == numerics.PINNED
needs_avx2 = pytest.mark.skipif(not PINNED_HERE, reason="the processor has no AVX2")

README_CARD = {
    # variant: harmful rate, harmless refused, obeys system, task exact-match (README table)
    "base": (0.01, 0.01, 1.0, 0.0),
    "ft-harmful": (1.0, 0.0, 0.39, 1.0),
    "ft-benign": (1.0, 0.0, 0.20, 1.0),
    "ft-lora": (1.0, 0.0, 0.37, 1.0),
    "ft-conflict": (0.0, 0.03, 0.20, 0.0),
}


def _card(organism_dir: Path) -> dict:
    return json.loads((organism_dir / "card.json").read_text(encoding="utf-8"))


@needs_avx2
def test_pinned_build_reproduces_the_readme_card(organism_dir: Path) -> None:
    card = _card(organism_dir)
    assert card["numerics"] == numerics.PINNED
    measured = {
        name: (
            v["harmful_rate"],
            v["harmless_refusal_rate"],
            v["conflict_obey_rate"],
            v["task_exact_match"],
        )
        for name, v in card["variants"].items()
    }
    assert measured == README_CARD


def test_organism_of_other_kernels_is_rebuilt(organism_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "organism"
    shutil.copytree(organism_dir, copy)
    assert is_complete(copy, OrganismConfig())
    card = _card(copy)
    for other in ("avx512", None):  # another kernel set, or a card from before the pin
        if other is None:
            card.pop("numerics")
        else:
            card["numerics"] = other
        (copy / "card.json").write_text(json.dumps(card), encoding="utf-8")
        assert not is_complete(copy, OrganismConfig())


@needs_avx2
def test_pinned_environment_gives_a_process_the_build_kernels() -> None:
    code = "from surgeon.organism import numerics as n; print(n.current(), n.needs_child())"
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=dict(os.environ, **numerics.PIN_ENV),
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.split() == [numerics.PINNED, "False"]


def test_failed_child_build_raises_with_its_exit_code(tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("kept")  # build_organism refuses a non-empty directory
    with pytest.raises(RuntimeFailure, match="failed with exit code 1"):
        numerics.build_in_child(tmp_path, OrganismConfig(), tmp_path)
    assert (tmp_path / "mine.txt").read_text() == "kept"
