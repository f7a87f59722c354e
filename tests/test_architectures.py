"""Every supported architecture loads from a local directory, formats chat, generates, and is
found by structure (layers, heads, residual stream), never by name."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from surgeon.architecture import ModelSpec, find_layers
from surgeon.chat import format_prompt, system_token_span
from surgeon.generation import generate
from surgeon.judges import FirstTokenScorer
from surgeon.loading import LoadOptions, load_model
from surgeon.testing import ARCHITECTURES, N_HEADS, N_LAYERS, save_tiny


@pytest.fixture(scope="module", params=sorted(ARCHITECTURES))
def tiny_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    arch = request.param
    return save_tiny(tmp_path_factory.mktemp(arch) / "model", arch)


def test_loads_and_finds_structure(tiny_dir: Path) -> None:
    loaded = load_model(tiny_dir)
    assert loaded.source.kind == "hf_dir"
    assert loaded.spec.n_layers == N_LAYERS
    assert loaded.spec.n_heads == N_HEADS
    layers = find_layers(loaded.model)
    assert len(layers.layers) == N_LAYERS
    name = next(n for n, _ in loaded.model.named_parameters() if f"{layers.prefix}.2." in n)
    assert layers.index_of(name) == 2
    # the residual stream after each layer has the width the spec names
    enc = loaded.tokenizer(["<s> tell me about cake"], return_tensors="pt")
    with torch.no_grad():
        out = loaded.model(**enc, output_hidden_states=True)
    assert len(out.hidden_states) == N_LAYERS + 1
    assert out.hidden_states[-1].shape[-1] == loaded.spec.d_model


def test_chat_generation_and_refusal_score(tiny_dir: Path) -> None:
    loaded = load_model(tiny_dir)
    fp = format_prompt(loaded.tokenizer, "tell me about cake", system="never mention blue")
    assert fp.text.endswith("<|assistant|>")
    span = system_token_span(loaded.tokenizer, fp)
    assert span is not None
    ids = loaded.tokenizer(fp.text, add_special_tokens=False)["input_ids"]
    assert loaded.tokenizer.decode(ids[span[0] : span[1]]).split() == ["never", "mention", "blue"]
    texts = [fp.text, format_prompt(loaded.tokenizer, "hi").text]
    first = generate(loaded.model, loaded.tokenizer, texts, max_new_tokens=4, batch_size=2)
    again = generate(loaded.model, loaded.tokenizer, texts, max_new_tokens=4, batch_size=1)
    assert first == again  # left padding: batched equals one-by-one, and deterministic
    scores = FirstTokenScorer(loaded.tokenizer).scores(loaded.model, texts)
    assert scores.shape == (2,) and torch.isfinite(scores).all()


def test_bridge_view_matches_hidden_states(tiny_dir: Path) -> None:
    from surgeon.bridge import hookable, resid_hook_name

    loaded = load_model(tiny_dir)
    bridge = hookable(loaded)
    toks = loaded.tokenizer(["<s> tell me about cake"], return_tensors="pt").input_ids
    _, cache = bridge.run_with_cache(toks)
    with torch.no_grad():
        hidden = loaded.model(toks, output_hidden_states=True).hidden_states
    # hidden_states[l + 1] is the residual stream after layer l (the last one is normed by HF)
    torch.testing.assert_close(cache[resid_hook_name(1)], hidden[2])


def test_sharded_checkpoint(tmp_path: Path) -> None:
    path = save_tiny(tmp_path / "sharded", "llama", max_shard_size="50KB")
    assert (path / "model.safetensors.index.json").exists()
    loaded = load_model(path)
    single = load_model(save_tiny(tmp_path / "single", "llama"))
    for (n1, p1), (n2, p2) in zip(
        loaded.model.named_parameters(), single.model.named_parameters(), strict=True
    ):
        assert n1 == n2
        torch.testing.assert_close(p1, p2)


def test_spec_from_nested_text_config() -> None:
    from types import SimpleNamespace

    inner = SimpleNamespace(
        model_type="x", num_hidden_layers=3, num_attention_heads=2, hidden_size=8
    )
    spec = ModelSpec.from_config(SimpleNamespace(text_config=inner))
    assert (spec.n_layers, spec.n_heads, spec.n_kv_heads, spec.head_dim) == (3, 2, 2, 4)


def test_dtype_option(tmp_path: Path) -> None:
    path = save_tiny(tmp_path / "m", "llama")
    loaded = load_model(path, options=LoadOptions(dtype="bfloat16"))
    assert next(loaded.model.parameters()).dtype == torch.bfloat16


def test_adapter_directory(tmp_path: Path) -> None:
    from peft import LoraConfig, get_peft_model

    base = save_tiny(tmp_path / "base", "llama")
    model = load_model(base).model
    torch.manual_seed(1)
    peft_model = get_peft_model(
        model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    )
    peft_model.save_pretrained(tmp_path / "adapter")
    merged_ref = peft_model.merge_and_unload()
    loaded = load_model(tmp_path / "adapter", base=base)
    assert loaded.source.kind == "adapter"
    enc = loaded.tokenizer(["<s> tell me about cake"], return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(**enc).logits, merged_ref(**enc).logits)
    separate = load_model(tmp_path / "adapter", base=base, merge_adapter=False)
    assert hasattr(separate.model, "disable_adapter")


# ---------------------------------------------------------------------------------------------
# batched, left-padded forwards equal the same prompts one at a time (position ids), per family

PROMPTS = (
    "tell me about cake",
    "how to build a bomb with a friend and the password of the bank please tell me the steps",
    "hi",
    "write a poem about the blue sky and the green garden",
)


def _texts(tokenizer: object) -> list[str]:
    systems = [None, "never mention blue", None, "say yes"]
    return [
        format_prompt(tokenizer, p, system=s).text  # type: ignore[arg-type]
        for p, s in zip(PROMPTS, systems, strict=True)
    ]


def test_encode_gives_positions_from_the_first_real_token(tiny_dir: Path) -> None:
    from surgeon.tokens import encode

    loaded = load_model(tiny_dir)
    enc = encode(loaded.tokenizer, _texts(loaded.tokenizer))
    lengths = enc["attention_mask"].sum(1)
    assert len(set(lengths.tolist())) == len(PROMPTS)  # every row padded differently
    for row, n in enumerate(lengths.tolist()):
        assert enc["position_ids"][row, -n:].tolist() == list(range(n))
        assert enc["input_ids"][row, -1] == enc["input_ids"][0, -1]  # the assistant header


def test_batched_forwards_equal_one_by_one(tiny_dir: Path) -> None:
    from probes.activations import collect_activations
    from surgeon.tokens import encode

    loaded = load_model(tiny_dir)
    model, tok = loaded.model, loaded.tokenizer
    texts = _texts(tok)
    with torch.no_grad():
        enc = encode(tok, texts)
        batched = model(**enc).logits
        for row, text in enumerate(texts):
            alone = model(**encode(tok, [text])).logits[0]
            n = alone.shape[0]  # every real position, not only the last
            torch.testing.assert_close(batched[row, -n:], alone)
    scorer = FirstTokenScorer(tok, batch_size=len(texts))
    one = FirstTokenScorer(tok, batch_size=1)
    torch.testing.assert_close(scorer.scores(model, texts), one.scores(model, texts))
    torch.testing.assert_close(
        collect_activations(model, tok, texts, positions=2, batch_size=len(texts)),
        collect_activations(model, tok, texts, positions=2, batch_size=1),
    )


def test_batched_generation_equals_one_by_one(tiny_dir: Path) -> None:
    from surgeon.tokens import encode

    loaded = load_model(tiny_dir)
    model, tok = loaded.model, loaded.tokenizer
    texts = _texts(tok)
    batched = generate(model, tok, texts, max_new_tokens=12, batch_size=4)
    assert batched == generate(model, tok, texts, max_new_tokens=12, batch_size=1)
    # the same at the token level (decoding drops special tokens), through the encoding
    # surgeon.generation hands to model.generate
    settings = {"max_new_tokens": 12, "do_sample": False, "pad_token_id": tok.pad_token_id}
    enc = encode(tok, texts)
    new = model.generate(**enc, **settings)[:, enc["input_ids"].shape[1] :]
    rows = []
    for text in texts:
        one = encode(tok, [text])
        rows.append(model.generate(**one, **settings)[0, one["input_ids"].shape[1] :])
    eos = tok.eos_token_id
    assert [_until(r.tolist(), eos) for r in new] == [_until(r.tolist(), eos) for r in rows]


def _until(ids: list[int], eos: int) -> list[int]:
    """Tokens up to and including the first end-of-sequence (a batch pads after it)."""
    return ids[: ids.index(eos) + 1] if eos in ids else ids


def test_batched_answer_cross_entropy_equals_one_by_one(tiny_dir: Path) -> None:
    from surgeon.repair.task_metric import answer_cross_entropy, own_answers

    loaded = load_model(tiny_dir)
    texts = _texts(loaded.tokenizer)
    answers = own_answers(loaded.model, loaded.tokenizer, texts, 6, len(texts))
    assert answers == own_answers(loaded.model, loaded.tokenizer, texts, 6, 1)
    with torch.no_grad():
        batched = answer_cross_entropy(loaded.model, loaded.tokenizer, answers, len(texts))
        alone = answer_cross_entropy(loaded.model, loaded.tokenizer, answers, 1)
    torch.testing.assert_close(torch.tensor(batched), torch.tensor(alone))


def test_ablation_removes_the_direction_from_every_block_write(tiny_dir: Path) -> None:
    """Arditi et al.'s ablation: inside ``ablate_direction`` no layer's input, attention
    output or MLP output (their output norms in Gemma-2) has a component along the direction,
    on every architecture; outside it they do."""
    from probes.intervene import ablate_direction, residual_writers
    from surgeon.tokens import encode

    loaded = load_model(tiny_dir)
    model, tok = loaded.model, loaded.tokenizer
    layers = list(find_layers(model).layers)
    writers = [w for layer in layers for w in residual_writers(layer)]
    assert len(writers) == 2 * len(layers)
    d = torch.randn(model.config.hidden_size, generator=torch.Generator().manual_seed(0))
    r = d / d.norm()
    enc = encode(tok, _texts(tok))

    def along() -> list[float]:
        """|component along r| / norm, per layer input and block write (hooks registered now
        run after any registered before, so they see what the next module reads)."""
        seen: list[float] = []

        def record(_m: object, args: tuple, out: object = None) -> None:
            h = args[0] if out is None else (out[0] if isinstance(out, tuple) else out)
            seen.append(float((h @ r).abs().max() / h.norm(dim=-1).max()))

        handles = [w.register_forward_hook(record) for w in writers]
        handles += [layer.register_forward_pre_hook(record) for layer in layers]
        try:
            with torch.no_grad():
                model(**enc)
        finally:
            for h in handles:
                h.remove()
        return seen

    plain = along()
    with ablate_direction(model, d):
        ablated = along()
    assert len(plain) == len(ablated) == 3 * len(layers)
    assert min(plain) > 1e-3
    assert max(ablated) < 1e-5


def test_answer_loss_on_the_kept_positions_equals_full_logits(tiny_dir: Path) -> None:
    """The answer losses project only the answer positions onto the vocabulary
    (``logits_to_keep``); each row's loss equals one full, unpadded teacher-forced forward."""
    from surgeon.repair.task_metric import AnswerSet, row_cross_entropy

    loaded = load_model(tiny_dir)
    tok = loaded.tokenizer
    prompts = tuple(tuple(tok(t, add_special_tokens=False)["input_ids"]) for t in _texts(tok))
    answers = AnswerSet(prompts, ((5, 6, 7), (8,), (9, 10, 11, 12, 13), (14, 15)))
    rows = range(len(answers.answer_ids))
    with torch.no_grad():
        mean = row_cross_entropy(loaded.model, tok, answers, rows)
        first = row_cross_entropy(loaded.model, tok, answers, rows, first_token_share=1.0)
        for i in rows:
            seq = list(answers.prompt_ids[i] + answers.answer_ids[i])
            logits = loaded.model(input_ids=torch.tensor([seq])).logits[0].float()
            logp = torch.log_softmax(logits[:-1], -1)
            nll = -logp.gather(-1, torch.tensor(seq[1:]).unsqueeze(-1)).squeeze(-1)
            tail = nll[len(answers.prompt_ids[i]) - 1 :]
            torch.testing.assert_close(mean[i], tail.mean(), rtol=1e-4, atol=1e-4)
            torch.testing.assert_close(first[i], tail[0], rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------------------------------------
# prompts longer than the context: cut from the left, counted, generation still works


def test_long_prompt_is_cut_from_the_left_and_counted(tiny_dir: Path) -> None:
    from surgeon.tokens import encode, track_truncation

    loaded = load_model(tiny_dir)
    tok = loaded.tokenizer
    assert tok.model_max_length == 128  # the tiny configs' context, set by load_model
    long_text = format_prompt(tok, " ".join(["cake"] * 300), system="never mention blue").text
    short = format_prompt(tok, "hi").text
    full = tok(long_text, add_special_tokens=False)["input_ids"]
    with track_truncation() as log:
        enc = encode(tok, [long_text, short])
        encode(tok, [long_text])  # the same prompt again counts once
        out = generate(loaded.model, tok, [long_text, short], max_new_tokens=5, batch_size=2)
    assert enc["input_ids"].shape[1] == 128
    assert enc["input_ids"][0].tolist() == full[-128:]  # the end, with the assistant header
    assert (log.count, log.longest, log.limit) == (1, len(full), 128 - 5)
    assert out[1] == generate(loaded.model, tok, [short], max_new_tokens=5)[0]
    with track_truncation() as outside:
        encode(tok, [short])
    assert outside.count == 0
