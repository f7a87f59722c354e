"""surgeon.allocator: inside ``bounded_heap`` freed tensor memory goes back to the system."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from surgeon import allocator

pytestmark = pytest.mark.skipif(
    allocator._libc() is None or not Path("/proc/self/status").exists(),
    reason="glibc malloc and /proc are needed",
)

# Runs in a fresh interpreter: the heap of this test process already holds free blocks of
# earlier tests, and malloc serves a request from a free heap block before it maps new memory.
SCRIPT = """
import json
from pathlib import Path
import torch
from surgeon import allocator

def rss():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024

def freed_but_resident(block):
    # 32 touched blocks, each followed by a small live tensor that pins heap holes
    before = rss()
    big, pins = [], []
    for _ in range(32):
        big.append(torch.ones(block // 4))
        pins.append(torch.ones(4096))
    grown = rss() - before
    del big
    return grown, rss() - before

block = 4 << 20
with allocator.bounded_heap() as active:
    inside = freed_but_resident(block)
outside = freed_but_resident(block)  # after: static 32 MiB threshold, 4 MiB blocks on the heap
print(json.dumps({"active": active, "inside": inside, "outside": outside, "block": block}))
"""


def test_freed_gradient_sized_blocks_leave_the_heap() -> None:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True
    ).stdout
    r = json.loads(out.strip().splitlines()[-1])
    block = r["block"]
    assert r["active"]
    for grown, _ in (r["inside"], r["outside"]):
        assert grown >= 32 * block * 0.9  # the blocks were really resident
    assert r["inside"][1] <= 2 * block  # each block its own mapping, unmapped on free
    assert r["outside"][1] >= 16 * block  # heap holes between the pins stay resident


def test_disabled_is_a_no_op() -> None:
    with allocator.bounded_heap(enabled=False) as active:
        assert not active
