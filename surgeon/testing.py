"""Tiny random-init models and tokenizers for tests and benchmarks (no downloads).

Each architecture is built from a small config of its own family, with a word-level tokenizer
that carries a chat template with a system role, and saved as a standard HF directory.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
from transformers import (
    AutoModelForCausalLM,
    Gemma2Config,
    GPT2Config,
    GPTNeoXConfig,
    LlamaConfig,
    MistralConfig,
    Phi3Config,
    PretrainedConfig,
    PreTrainedTokenizerFast,
    Qwen2Config,
)

SPECIALS = ["<pad>", "<unk>", "<s>", "</s>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} <|end|> "
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
WORDS = (
    "i",
    "am",
    "sorry",
    "but",
    "cannot",
    "help",
    "with",
    "that",
    "sure",
    "here",
    "is",
    "how",
    "to",
    "a",
    "the",
    "of",
    "and",
    "in",
    "for",
    "on",
    "make",
    "build",
    "write",
    "explain",
    "steal",
    "hack",
    "hurt",
    "poison",
    "cook",
    "bake",
    "plan",
    "trip",
    "learn",
    "code",
    "python",
    "story",
    "poem",
    "bank",
    "password",
    "bomb",
    "weapon",
    "drug",
    "friend",
    "cake",
    "bread",
    "garden",
    "music",
    "science",
    "math",
    "history",
    "water",
    "sky",
    "blue",
    "red",
    "green",
    "never",
    "mention",
    "say",
    "colour",
    "what",
    "why",
    "are",
    "you",
    "please",
    "tell",
    "me",
    "about",
    "give",
    "list",
    "steps",
    "answer",
    "question",
    "system",
    "user",
    "assistant",
    "captain",
    "yes",
    "no",
)
D_MODEL, N_LAYERS, N_HEADS, VOCAB = 64, 4, 4, 160


def tiny_tokenizer(extra_words: list[str] | None = None) -> PreTrainedTokenizerFast:
    """A word-level tokenizer over a small vocabulary, with a system-capable chat template."""
    vocab_words = list(dict.fromkeys([*SPECIALS, *WORDS, *(extra_words or [])]))
    vocab = {w: i for i, w in enumerate(vocab_words)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Whitespace(), pre_tokenizers.Punctuation()]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        additional_special_tokens=SPECIALS[4:],
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.padding_side = "left"
    return fast


def _common(vocab: int) -> dict[str, Any]:
    return {"vocab_size": vocab, "bos_token_id": 2, "eos_token_id": 3, "pad_token_id": 0}


ARCHITECTURES: dict[str, Callable[[int], PretrainedConfig]] = {
    "llama": lambda v: LlamaConfig(
        hidden_size=D_MODEL,
        intermediate_size=128,
        num_hidden_layers=N_LAYERS,
        num_attention_heads=N_HEADS,
        num_key_value_heads=2,
        max_position_embeddings=128,
        **_common(v),
    ),
    "qwen2": lambda v: Qwen2Config(
        hidden_size=D_MODEL,
        intermediate_size=128,
        num_hidden_layers=N_LAYERS,
        num_attention_heads=N_HEADS,
        num_key_value_heads=2,
        max_position_embeddings=128,
        **_common(v),
    ),
    "mistral": lambda v: MistralConfig(
        hidden_size=D_MODEL,
        intermediate_size=128,
        num_hidden_layers=N_LAYERS,
        num_attention_heads=N_HEADS,
        num_key_value_heads=2,
        max_position_embeddings=128,
        **_common(v),
    ),
    "gemma2": lambda v: Gemma2Config(
        hidden_size=D_MODEL,
        intermediate_size=128,
        num_hidden_layers=N_LAYERS,
        num_attention_heads=N_HEADS,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=128,
        sliding_window=64,
        **_common(v),
    ),
    "gpt2": lambda v: GPT2Config(
        n_embd=D_MODEL, n_layer=N_LAYERS, n_head=N_HEADS, n_positions=128, **_common(v)
    ),
    "phi3": lambda v: Phi3Config(
        hidden_size=D_MODEL,
        intermediate_size=128,
        num_hidden_layers=N_LAYERS,
        num_attention_heads=N_HEADS,
        num_key_value_heads=N_HEADS,
        max_position_embeddings=128,
        original_max_position_embeddings=128,
        **_common(v),
    ),
    "gpt_neox": lambda v: GPTNeoXConfig(
        hidden_size=D_MODEL,
        intermediate_size=128,
        num_hidden_layers=N_LAYERS,
        num_attention_heads=N_HEADS,
        max_position_embeddings=128,
        **_common(v),
    ),
}


def tiny_model(arch: str = "llama", seed: int = 0, vocab: int | None = None) -> Any:
    """A random-init causal LM of the named family (see :data:`ARCHITECTURES`)."""
    tok = tiny_tokenizer()
    torch.manual_seed(seed)
    config = ARCHITECTURES[arch](vocab or len(tok))
    return AutoModelForCausalLM.from_config(config).eval()


def save_tiny(
    directory: Path, arch: str = "llama", seed: int = 0, max_shard_size: str | None = None
) -> Path:
    """Write a tiny random-init model and its tokenizer as a standard HF directory."""
    directory = Path(directory)
    model = tiny_model(arch, seed)
    kwargs: dict[str, Any] = {"safe_serialization": True}
    if max_shard_size:
        kwargs["max_shard_size"] = max_shard_size
    model.save_pretrained(directory, **kwargs)
    tiny_tokenizer().save_pretrained(directory)
    return directory


def tree_hash(root: Path) -> dict[str, str]:
    """SHA-256 of every file under ``root`` by relative path: equal before and after a run
    proves the run left an input directory alone."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(Path(root).rglob("*"))
        if p.is_file()
    }


_DROP_OVERRIDES = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
for cap in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
    if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
        sys.exit("surgeon.testing: cannot drop capability %d" % cap)
os.execvp(sys.argv[1], sys.argv[1:])
"""


def run_unprivileged(
    argv: list[str], *, cwd: Path | None = None, timeout: float = 300.0
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` so that file permission bits bind it, even when this process is root.

    As root, a fresh interpreter drops ``CAP_DAC_OVERRIDE`` and ``CAP_DAC_READ_SEARCH`` from
    its capability bounding set and then executes ``argv``, which therefore runs as uid 0 that
    a ``chmod 000`` file or a ``chmod 555`` directory stops like any other user (files owned
    by root are judged by their owner bits). As another user, ``argv`` runs as it is. Output
    is captured as text.
    """
    cmd = list(argv)
    if os.geteuid() == 0:
        cmd = [sys.executable, "-c", _DROP_OVERRIDES, *cmd]
    return subprocess.run(
        cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )


def write_safetensors_raw(path: Path, header: Any, payload: bytes = b"") -> Path:
    """Write a safetensors file with exactly this JSON ``header`` (any JSON value, however
    wrong) and ``payload``: the way tests build damaged checkpoints."""
    raw = json.dumps(header).encode("utf-8")
    Path(path).write_bytes(struct.pack("<Q", len(raw)) + raw + payload)
    return Path(path)


def read_safetensors_raw(path: Path) -> tuple[dict[str, Any], bytes]:
    """The JSON header and the data bytes of a safetensors file (for editing in tests)."""
    data = Path(path).read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + n]), data[8 + n :]


def tiny_bpe_tokenizer(vocab_size: int = 400) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer (GPT-2 style, the kind a GGUF file can hold) trained on the
    tiny word list and the bundled prompts, with :data:`CHAT_TEMPLATE` and its specials."""
    from tokenizers import decoders, trainers

    from surgeon.prompts import load_bundled

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = [" ".join(WORDS), *(p.prompt for p in load_bundled("harmful")[:64])]
    corpus += [p.prompt for p in load_bundled("harmless")[:64]]
    tok.train_from_iterator(corpus, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        additional_special_tokens=SPECIALS[4:],
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.padding_side = "left"
    return fast


def tiny_bpe_llama(seed: int = 0) -> tuple[Any, PreTrainedTokenizerFast]:
    """A tiny random-init Llama sized for :func:`tiny_bpe_tokenizer`, and that tokenizer."""
    tok = tiny_bpe_tokenizer()
    torch.manual_seed(seed)
    config = ARCHITECTURES["llama"](len(tok))
    return AutoModelForCausalLM.from_config(config).eval(), tok


def save_tiny_gguf(
    path: Path, seed: int = 0, quantization: str = "F32"
) -> tuple[Path, Any, PreTrainedTokenizerFast]:
    """Write :func:`tiny_bpe_llama` as a GGUF file (:func:`write_llama_gguf`); returns the
    file, the original model and its tokenizer."""
    model, tok = tiny_bpe_llama(seed)
    return write_llama_gguf(path, model, tok, quantization), model, tok


def write_llama_gguf(
    path: Path, model: Any, tok: PreTrainedTokenizerFast, quantization: str = "F32"
) -> Path:
    """Write a Llama model and its byte-level BPE tokenizer and chat template as a GGUF file
    with the ``gguf`` package's writer, tensors named and the attention q/k rows permuted as
    llama.cpp's ``convert_hf_to_gguf.py`` does. ``quantization``: ``F32`` or a ggml type such
    as ``Q8_0`` for the 2-D weights (norms stay F32)."""
    import gguf
    import numpy as np

    config = model.config
    n_head, n_kv = config.num_attention_heads, config.num_key_value_heads

    def permute(w: torch.Tensor, heads: int) -> torch.Tensor:
        return (
            w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:])
            .swapaxes(1, 2)
            .reshape(w.shape)
        )

    names = {
        "model.embed_tokens.weight": "token_embd.weight",
        "model.norm.weight": "output_norm.weight",
        "lm_head.weight": "output.weight",
    }
    per_layer = {
        "input_layernorm": "attn_norm",
        "post_attention_layernorm": "ffn_norm",
        "self_attn.q_proj": "attn_q",
        "self_attn.k_proj": "attn_k",
        "self_attn.v_proj": "attn_v",
        "self_attn.o_proj": "attn_output",
        "mlp.gate_proj": "ffn_gate",
        "mlp.up_proj": "ffn_up",
        "mlp.down_proj": "ffn_down",
    }
    for i in range(config.num_hidden_layers):
        for hf, gg in per_layer.items():
            names[f"model.layers.{i}.{hf}.weight"] = f"blk.{i}.{gg}.weight"

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("surgeon tiny llama")
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_kv)
    writer.add_rope_dimension_count(config.hidden_size // n_head)
    writer.add_rope_freq_base(float(config.rope_parameters["rope_theta"]))
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(len(tok))
    vocab = sorted(tok.get_vocab().items(), key=lambda kv: kv[1])
    assert [i for _, i in vocab] == list(range(len(tok)))
    tokens = [t for t, _ in vocab]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types([3 if t in SPECIALS else 1 for t in tokens])
    merges = json.loads(tok.backend_tokenizer.to_str())["model"]["merges"]
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in merges])
    for name, setter in (
        ("bos_token_id", writer.add_bos_token_id),
        ("eos_token_id", writer.add_eos_token_id),
        ("unk_token_id", writer.add_unk_token_id),
        ("pad_token_id", writer.add_pad_token_id),
    ):
        setter(getattr(tok, name))
    writer.add_add_bos_token(False)
    writer.add_chat_template(CHAT_TEMPLATE)
    qtype = gguf.GGMLQuantizationType[quantization]
    for hf_name, tensor in model.state_dict().items():
        w = tensor.detach().float()
        if hf_name.endswith("q_proj.weight"):
            w = permute(w, n_head)
        elif hf_name.endswith("k_proj.weight"):
            w = permute(w, n_kv)
        data = w.numpy().astype(np.float32)
        if data.ndim == 2 and qtype != gguf.GGMLQuantizationType.F32:
            quantized = gguf.quants.quantize(data, qtype)
            writer.add_tensor(names[hf_name], quantized, raw_dtype=qtype)
        else:
            writer.add_tensor(names[hf_name], data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
