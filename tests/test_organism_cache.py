"""Two processes (here threads, each with its own lock file handle) asking for the same
organism build it once: the second waits for the first and reuses its result."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from surgeon.organism import OrganismConfig, ensure_organism, numerics
from surgeon.organism import cache as cache_mod
from surgeon.organism.config import ORGANISM_VERSION


def test_concurrent_requests_build_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = OrganismConfig()
    builds: list[float] = []

    def fake_build(out: Path, cfg: OrganismConfig, final_dir: Path) -> None:
        builds.append(time.perf_counter())
        time.sleep(0.5)  # long enough for the other request to arrive while building
        for v in (*cfg.variants, "prompts"):
            (out / v).mkdir()
        card = {
            "version": ORGANISM_VERSION,
            "cache_key": cfg.cache_key(),
            "numerics": numerics.expected(),
        }
        (out / "card.json").write_text(json.dumps(card), encoding="utf-8")

    monkeypatch.setattr(cache_mod, "build_organism", fake_build)
    monkeypatch.setattr(numerics, "needs_child", lambda: False)  # build in this process
    target = tmp_path / "organism"
    results: list[Path] = []
    threads = [
        threading.Thread(target=lambda: results.append(ensure_organism(target, config=config)))
        for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert results == [target.absolute()] * 2
    assert len(builds) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["organism"]  # nothing left beside it
