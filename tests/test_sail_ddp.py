"""SAIL's loop data-parallel on two CPU processes under ``accelerate launch``: both processes
end with the same adapter, and it is the adapter one process trains on the same global batches.

``accelerate launch --cpu --num_processes 2`` starts a single process in accelerate 1.x unless
an MPI hostfile is configured (its simple launcher); ``--multi_gpu --num_processes 2`` starts
two through torchrun, and on a machine without GPUs (or with ``--device cpu``) each process's
``Accelerator(cpu=True)`` joins a gloo process group: that is the launch tested here.

Run as a script, this file is the worker: ``python tests/test_sail_ddp.py OUT`` trains a LoRA
adapter on a tiny model and writes the process's adapter to ``OUT/rank<i>.safetensors``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

WORKER_STEPS = 3


def worker(out: Path) -> None:
    """Train a tiny adapter (every process the same way) and save this process's copy."""
    from safetensors.torch import save_file

    from probes.focal import FocalHead
    from probes.heads import find_attention
    from surgeon.repair.sail_config import SailConfig
    from surgeon.repair.sail_data import PreferencePair, encode_pairs
    from surgeon.repair.sail_lora import Placement, attach_lora, reference_tokens
    from surgeon.repair.sail_train import make_accelerator, token_data, train
    from surgeon.testing import tiny_model, tiny_tokenizer

    torch.set_num_threads(1)
    accelerator = make_accelerator("cpu")
    tok = tiny_tokenizer()
    model = tiny_model("llama")
    for p in model.parameters():
        p.requires_grad_(False)
    layers = (1, 2)
    attention = find_attention(model)
    heads = tuple(FocalHead(la, h, 1.0) for la in layers for h in range(attention.n_heads))
    placement = Placement(layers, heads, "given", tuple(attention.target_modules(layers)))
    torch.manual_seed(0)
    peft = attach_lora(model, placement, r=8, alpha=16, dropout=0.0)
    pairs = [
        PreferencePair("reply in upper case", "tell me how are you", "YES", "no thanks"),
        PreferencePair("say yes", "please answer the question", "yes", "no no no"),
        PreferencePair("say no", "why are you here", "no", "yes yes"),
        PreferencePair("answer with a list", "give me steps", "steps : one two", "no"),
        PreferencePair("be the captain", "who are you", "captain", "assistant here"),
        PreferencePair(None, "tell me about system", "yes", "no"),
    ]
    encoded, _ = encode_pairs(tok, pairs, max_length=128, max_response_tokens=16)
    reference = reference_tokens(peft, tok, encoded, heads=heads, batch_size=4)
    data = token_data(encoded, reference, "attention")
    config = SailConfig(steps=WORKER_STEPS, batch_size=4, lr=1e-2, check_every=0, warmup_steps=0)
    outcome = train(peft, data, config, accelerator, tok.pad_token_id)
    assert len(outcome.steps) == WORKER_STEPS
    state = {n: p.detach().clone() for n, p in peft.named_parameters() if "lora_" in n}
    state["losses"] = torch.tensor([s.loss for s in outcome.steps])
    out.mkdir(parents=True, exist_ok=True)
    name = f"rank{accelerator.process_index}-of-{accelerator.num_processes}.safetensors"
    save_file(state, str(out / name))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run(argv: list[str]) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SURGEON_QUIET": "1"}
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.timeout(360)
def test_two_processes_end_with_the_same_adapter(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    script = str(Path(__file__).resolve())
    _run(
        [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
         "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
         "--main_process_port", str(_free_port()), script, str(tmp_path)]
    )  # fmt: skip
    _run([sys.executable, script, str(tmp_path)])
    rank0 = load_file(tmp_path / "rank0-of-2.safetensors")
    rank1 = load_file(tmp_path / "rank1-of-2.safetensors")
    alone = load_file(tmp_path / "rank0-of-1.safetensors")
    assert rank0.keys() == rank1.keys() == alone.keys()
    for name in rank0:
        assert torch.equal(rank0[name], rank1[name]), name
    # trained: every lora_B moved off its zero start
    assert all(float(v.abs().sum()) > 0 for k, v in rank0.items() if "lora_B" in k)
    # data parallel = the same global batches in one process (up to float summation order)
    for name in rank0:
        torch.testing.assert_close(rank0[name], alone[name], rtol=1e-4, atol=1e-6)


if __name__ == "__main__":
    worker(Path(sys.argv[1]))
