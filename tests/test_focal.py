"""The focal-head probe, attention drift and head mean-ablation: system spans in tokens for every
architecture, attention captured per query head, a planted head found and shown causal, and
the measurements on the model organism."""

from __future__ import annotations

import dataclasses
import json
import math
import random
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from tokenizers import processors
from transformers import AutoTokenizer

from probes.focal import (
    AttentionCapture,
    FocalConfig,
    FocalResult,
    Pair,
    attention_drift,
    capture_attention,
    capture_pairs,
    eager_attention,
    focal_probe,
    focal_scores,
    pairs_from_prompts,
    score_mass,
    score_rows,
    spans_in_batch,
    system_prompts,
)
from probes.head_ablation import ablate_heads, causal_check, head_means, random_head_sets
from probes.heads import find_attention
from surgeon.chat import format_prompt, system_token_span, system_token_spans
from surgeon.constraints import check_constraint, parse_constraint
from surgeon.errors import InputError
from surgeon.generation import generate
from surgeon.loading import load_model
from surgeon.prompts import load_prompts
from surgeon.testing import ARCHITECTURES, N_HEADS, N_LAYERS, save_tiny, tiny_model, tiny_tokenizer
from surgeon.tokens import encode

SYSTEM_WORDS = ("never", "mention", "say", "colour", "blue", "red", "green")
"""Words only system messages use (the planted head's keys read them)."""
TRIGGER = "please"
"""The word that turns a normal user message into a conflicting one."""
PLANTED = (0, 3)
"""The planted head: layer 0, query head 3 (key/value group 1 of 2)."""


def make_pairs(n: int = 12, seed: int = 0) -> list[Pair]:
    """System messages and user messages of varied lengths from the tiny vocabulary."""
    rng = random.Random(seed)
    colours = ["blue", "red", "green", "colour"]
    topics = ["cake", "bread", "garden", "music", "history", "math", "science"]
    pairs = []
    for _ in range(n):
        verb = rng.choice(["mention", "say"])
        system = " ".join(["never", verb, *rng.sample(colours, rng.randint(1, 4))])
        user = " ".join(["tell", "me", "about", *rng.sample(topics, rng.randint(1, 4))])
        pairs.append(Pair(system, user, f"{TRIGGER} {user}"))
    return pairs


def normalised(text: str) -> str:
    """Lower case without whitespace (the tiny tokenizer lowercases and splits punctuation)."""
    return re.sub(r"\s+", "", text).lower()


# ----- system span ------------------------------------------------------------------------


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_span_tokens_decode_to_the_system_text(arch: str, tmp_path: Path) -> None:
    loaded = load_model(save_tiny(tmp_path / arch, arch))
    tok = loaded.tokenizer
    pairs = make_pairs(6)
    users = [p.prompt for p in pairs[:3]] + [p.conflict for p in pairs[3:]]
    prompts = system_prompts(tok, [p.system for p in pairs], users)
    enc = encode(tok, list(prompts.texts))
    assert len(set(prompts.lengths)) > 1  # the batch is really padded
    spans = spans_in_batch(prompts, range(len(pairs)), enc["attention_mask"])
    for row, (pair, (s, e)) in enumerate(zip(pairs, spans, strict=True)):
        assert enc["attention_mask"][row, s:e].all()
        assert normalised(tok.decode(enc["input_ids"][row, s:e])) == normalised(pair.system)
        before = tok.decode(enc["input_ids"][row, s - 1 : s])
        assert before == "<|system|>"


def test_span_with_a_byte_level_bpe_template(organism_dir: Path) -> None:
    tok = AutoTokenizer.from_pretrained(organism_dir / "base")
    systems = ['Never use the word "island" in your replies.', "Write every answer in UPPERCASE."]
    users = ["How do I season vegetables?", "No capitals please. Tell me how to comfort my boss."]
    prompts = system_prompts(tok, systems, users)
    enc = encode(tok, list(prompts.texts))
    spans = spans_in_batch(prompts, range(2), enc["attention_mask"])
    for row, (system, (s, e)) in enumerate(zip(systems, spans, strict=True)):
        assert tok.decode(enc["input_ids"][row, s:e]).strip() == system


def test_span_with_the_plain_fallback_and_a_tokenizer_bos() -> None:
    tok = tiny_tokenizer()
    tok.chat_template = None
    tok.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", 2)]
    )
    prompts = system_prompts(tok, ["never say red", "never mention blue green"], ["hi", "a b"])
    enc = encode(tok, list(prompts.texts))
    assert enc["input_ids"][0, -prompts.lengths[0]] == 2  # the tokenizer added BOS
    spans = spans_in_batch(prompts, range(2), enc["attention_mask"])
    decoded = [tok.decode(enc["input_ids"][r, s:e]) for r, (s, e) in enumerate(spans)]
    assert decoded == ["never say red", "never mention blue green"]


class _SlowView:
    """The tiny tokenizer seen as a slow one: no offset mapping."""

    is_fast = False

    def __init__(self, tok: Any) -> None:
        self.tok = tok
        self.chat_template = tok.chat_template

    def __call__(self, text: Any, **kwargs: Any) -> Any:
        assert not kwargs.pop("return_offsets_mapping", False)
        return self.tok(text, **kwargs)


@pytest.mark.parametrize("template", [True, False])
def test_slow_tokenizers_locate_the_same_span(template: bool) -> None:
    tok = tiny_tokenizer()
    if not template:
        tok.chat_template = None
        tok.backend_tokenizer.post_processor = processors.TemplateProcessing(
            single="<s> $A", special_tokens=[("<s>", 2)]
        )
    formatted = [format_prompt(tok, p.prompt, p.system) for p in make_pairs(5)]
    fast = system_token_spans(tok, formatted)
    assert system_token_spans(_SlowView(tok), formatted) == fast  # type: ignore[arg-type]
    assert all(span is not None and span[0] >= 1 for span, _ in fast)
    assert system_token_span(tok, formatted[0]) == fast[0][0]


def test_a_template_that_drops_the_system_message_is_an_input_error() -> None:
    tok = tiny_tokenizer()
    tok.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'user' %}{{ m['content'] }}{% endif %}"
        "{% endfor %}"
    )
    with pytest.raises(InputError, match="prompt 0: the chat template does not render"):
        system_prompts(tok, ["never say red"], ["hi"])
    with pytest.raises(InputError, match="needs a system message"):
        system_prompts(tiny_tokenizer(), [""], ["hi"])


# ----- capture ----------------------------------------------------------------------------


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_capture_matches_output_attentions_one_prompt_at_a_time(arch: str) -> None:
    """Batched, left-padded capture equals transformers' own attentions of each prompt alone,
    summed over the system span, per query head (GQA configs included)."""
    model, tok = tiny_model(arch), tiny_tokenizer()
    pairs = make_pairs(5, seed=1)
    systems, users = [p.system for p in pairs], [p.conflict for p in pairs]
    cap = capture_attention(model, tok, systems, users, batch_size=5, keep_rows=True)
    assert cap.mass.shape == (5, N_LAYERS, N_HEADS)
    prompts = system_prompts(tok, systems, users)
    with eager_attention(model), torch.no_grad():
        for i, text in enumerate(prompts.texts):
            out = model(**encode(tok, [text]), output_attentions=True)
            rows = torch.stack([a[0, :, -1, :] for a in out.attentions])  # [L, H, K]
            s, e = prompts.spans[i]
            torch.testing.assert_close(cap.mass[i], rows[:, :, s:e].sum(-1))
            assert cap.rows is not None
            torch.testing.assert_close(cap.rows[i], rows)


@pytest.mark.parametrize("arch", ["qwen2", "mistral"])
def test_gqa_scores_are_per_query_head(arch: str) -> None:
    model = tiny_model(arch)
    assert model.config.num_key_value_heads == 2
    result = focal_probe(model, tiny_tokenizer(), make_pairs(8), FocalConfig(top_k=3))
    for t in (result.scores, result.mass_normal, result.mass_conflict, result.mass_normal_std):
        assert t.shape == (N_LAYERS, N_HEADS)
    # query heads 0 and 1 read the same key/value head but have their own queries
    assert (result.mass_normal[:, 0] - result.mass_normal[:, 1]).abs().max() > 1e-4
    assert len(result.heads) == 3 and result.layers == tuple(
        sorted({h.layer for h in result.heads})
    )
    scores = [h.score for h in result.heads]
    assert scores == sorted(scores, reverse=True) and scores[0] == result.scores.max()


def test_probe_leaves_weights_and_attention_implementation_alone() -> None:
    model = tiny_model("llama")
    assert model.config._attn_implementation == "sdpa"
    before = {k: v.clone() for k, v in model.state_dict().items()}
    focal_probe(model, tiny_tokenizer(), make_pairs(4), FocalConfig(rule="row"))
    assert model.config._attn_implementation == "sdpa"
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_hooks_removed_and_attention_restored_after_an_exception() -> None:
    model, tok = tiny_model("llama"), tiny_tokenizer()
    sites = find_attention(model).sites

    def boom(*_: object) -> None:
        raise RuntimeError("boom")

    handle = model.model.layers[2].register_forward_hook(boom)
    try:
        with pytest.raises(RuntimeError, match="boom"):
            focal_probe(model, tok, make_pairs(3))
        assert model.config._attn_implementation == "sdpa"
        assert all(not s.module._forward_hooks for s in sites)
    finally:
        handle.remove()
    means = head_means(model, tok, [format_prompt(tok, "hi", "never say red").text])
    with pytest.raises(RuntimeError, match="inside"), ablate_heads(model, [(1, 0), (3, 2)], means):
        assert sites[1].output_projection._forward_pre_hooks
        raise RuntimeError("inside")
    assert all(not s.output_projection._forward_pre_hooks for s in sites)


# ----- scoring rules (pure) ---------------------------------------------------------------


def test_mass_rule_is_the_published_formula() -> None:
    normal = torch.tensor([0.8, 0.6, 0.7]).view(3, 1, 1)
    conflict = torch.tensor([0.1, 0.3]).view(2, 1, 1)
    sd = lambda xs: math.sqrt(sum((x - sum(xs) / len(xs)) ** 2 for x in xs) / len(xs))  # noqa: E731
    expected = abs(0.7 - 0.2) / (sd([0.8, 0.6, 0.7]) + sd([0.1, 0.3]) + 1e-6)
    assert float(score_mass(normal, conflict)) == pytest.approx(expected, rel=1e-5)


def test_row_rule_cuts_rows_to_the_shortest_and_matches_focallora() -> None:
    gen = torch.Generator().manual_seed(0)

    def row(n: int) -> torch.Tensor:
        return torch.rand(1, 1, n, generator=gen).softmax(-1)

    normal, conflict = [row(5), row(7)], [row(6), row(4)]
    got = float(score_rows(normal, conflict))
    # FocalLoRA's score_heads on rows trimmed to the shortest length (4), in plain python
    n = [r[0, 0, :4].tolist() for r in normal]
    c = [r[0, 0, :4].tolist() for r in conflict]
    frob = math.sqrt(
        sum((a - b) ** 2 for ra, rb in zip(n, c, strict=True) for a, b in zip(ra, rb, strict=True))
    )
    shift = sum(abs(sum(ra) / 4 - sum(rb) / 4) for ra, rb in zip(n, c, strict=True)) / 2

    def softmax(xs: list[float]) -> list[float]:
        m = max(xs)
        e = [math.exp(x - m) for x in xs]
        return [x / sum(e) for x in e]

    kl = (
        sum(
            p * (math.log(p + 1e-6) - math.log(q + 1e-6))
            for ra, rb in zip(n, c, strict=True)
            for p, q in zip(softmax(ra), softmax(rb), strict=True)
        )
        / 2
    )
    assert got == pytest.approx(0.4 * frob + 0.3 * shift + 0.3 * kl, rel=1e-5)
    assert float(score_rows(normal, normal)) == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError, match="paired"):
        score_rows(normal, conflict[:1])


def test_config_validation_and_top_share() -> None:
    assert FocalConfig(top_share=0.1).k_of(24) == 3
    assert FocalConfig(top_share=0.1).k_of(5) == 1
    assert FocalConfig().k_of(24) == 10 and FocalConfig(top_k=50).k_of(24) == 24
    for bad in ({"rule": "kl"}, {"top_k": 0}, {"top_share": 0.0}, {"top_k": 3, "top_share": 0.5}):
        with pytest.raises(ValueError):
            FocalConfig(**bad)  # type: ignore[arg-type]


def _result(scores: torch.Tensor, conflict: torch.Tensor, rule: str = "mass") -> FocalResult:
    n = conflict.shape[0]
    spans, lengths = ((1, 3),) * n, (5,) * n
    normal_cap = AttentionCapture(torch.rand(n, *scores.shape), None, spans, lengths)
    conflict_cap = AttentionCapture(conflict, None, spans, lengths)
    res = focal_scores(normal_cap, conflict_cap, FocalConfig(rule="mass", top_k=2))
    return dataclasses.replace(res, scores=scores, rule=rule)


def test_drift_is_model_minus_base_and_ranks_the_movers() -> None:
    base = _result(torch.tensor([[1.0, 2.0], [0.5, 0.0]]), torch.full((4, 2, 2), 0.2))
    model = _result(torch.tensor([[1.1, 0.5], [2.5, 0.0]]), torch.full((4, 2, 2), 0.3))
    drift = attention_drift(base, model, top=3)
    torch.testing.assert_close(drift.score_delta, torch.tensor([[0.1, -1.5], [2.0, 0.0]]))
    torch.testing.assert_close(drift.conflict_mass_delta, torch.full((2, 2), 0.1))
    assert [(d.layer, d.head) for d in drift.moved_most] == [(1, 0), (0, 1), (0, 0)]
    top = drift.moved_most[0]
    assert (top.score, top.score_base, top.delta) == pytest.approx((2.5, 0.5, 2.0))
    with pytest.raises(ValueError, match="cannot compare"):
        attention_drift(base, _result(model.scores, torch.full((4, 2, 2), 0.3), rule="row"))


# ----- a planted head ---------------------------------------------------------------------


def planted_model() -> tuple[torch.nn.Module, object]:
    """A tiny Llama (GQA) whose layer-0 head 3 attends to system words on normal prompts and to
    the trigger word on conflicts, and whose every other head cannot act (zero columns of
    the output projection), so only the planted head's output can change the logits.

    All tokens carry a constant feature (residual dim 2), system words a second (dim 0), the
    trigger a third (dim 1). Head 3 queries the constant feature; its key/value group keys
    system words at logit ~5.7 and the trigger at ~17, in the slowest rotary pair, so
    position barely matters.
    """
    tok = tiny_tokenizer()
    model = tiny_model("llama", seed=0)
    amap = find_attention(model)
    lay, site = amap.layout, amap.sites[PLANTED[0]]
    head = PLANTED[1]
    vocab = tok.get_vocab()
    with torch.no_grad():
        emb = model.get_input_embeddings().weight
        emb[:, 2] += 1.0
        for word in SYSTEM_WORDS:
            emb[vocab[word], 0] += 1.0
        emb[vocab[TRIGGER], 1] += 1.0
        q = model.get_submodule(site.projection("q")).weight
        k = model.get_submodule(site.projection("k")).weight
        d, g = lay.head_dim // 2 - 1, lay.kv_group(head)
        q[lay.head_slice(head)] = 0
        q[head * lay.head_dim + d, 2] = 1.0
        k[lay.kv_slice(g)] = 0
        k[g * lay.head_dim + d, 0] = 0.5
        k[g * lay.head_dim + d, 1] = 1.5
        model.get_submodule(site.projection("v")).weight[lay.kv_slice(g)] *= 30
        for s in amap.sites:
            o = s.output_projection.weight
            for h in range(lay.n_heads):
                if (s.layer, h) == PLANTED:
                    o[:, lay.head_slice(h)] *= 10
                else:
                    o[:, lay.head_slice(h)] = 0
    return model, tok


@pytest.mark.parametrize("rule", ["mass", "row"])
def test_planted_head_is_ranked_first(rule: str) -> None:
    model, tok = planted_model()
    result = focal_probe(model, tok, make_pairs(), FocalConfig(rule=rule, top_k=3))
    assert (result.heads[0].layer, result.heads[0].head) == PLANTED
    assert result.heads[0].score > 10 * result.heads[1].score
    assert result.layers[0] == 0
    assert result.mass_normal[PLANTED] > 0.95 and result.mass_conflict[PLANTED] < 0.05


def test_ablating_the_planted_head_changes_behaviour_and_others_do_not() -> None:
    model, tok = planted_model()
    pairs = make_pairs()
    normal = [format_prompt(tok, p.prompt, p.system).text for p in pairs]
    texts = normal + [format_prompt(tok, p.conflict, p.system).text for p in pairs]
    enc = encode(tok, texts)
    means = head_means(model, tok, normal)
    assert means.means.shape == (N_LAYERS, N_HEADS, 16) and means.positions == "all"

    @torch.no_grad()
    def logits() -> torch.Tensor:
        return model(**enc).logits[:, -1]

    reference = logits()
    with ablate_heads(model, [PLANTED], means):
        ablated = logits()
    assert (ablated - reference).abs().max() > 0.1  # logits of this init are ~0.1-0.3
    assert (ablated.argmax(-1) != reference.argmax(-1)).any()  # greedy tokens change
    for head in find_attention(model).all_heads():
        if head != PLANTED:
            with ablate_heads(model, [head], means):
                assert torch.equal(logits(), reference), head
    assert torch.equal(logits(), reference)  # nothing left behind

    def flipped() -> float:  # share of prompts whose greedy next token differs
        return float((logits().argmax(-1) != reference.argmax(-1)).float().mean())

    check = causal_check(model, [PLANTED], means, flipped, metric="greedy_flips", draws=20)
    assert check.valid and check.focal >= 0.2
    assert check.random_changes == (0.0,) * 20 and check.baseline == 0.0
    assert all(PLANTED not in draw for draw in check.random_heads)
    dud = causal_check(model, [(2, 1)], means, flipped, metric="greedy_flips", draws=5)
    assert not dud.valid and dud.focal == 0.0
    assert set(check.to_json()) >= {"metric", "focal", "random_mean", "random_std", "draws"}


def test_validity_needs_the_focal_change_beyond_the_random_spread() -> None:
    model = tiny_model("llama")
    means = head_means(model, tiny_tokenizer(), ["<s> never say red <|assistant|>"])

    def scripted(values: list[float]) -> Callable[[], float]:
        it = iter(values)
        return lambda: next(it)

    # baseline 0, focal 0.3, random 0.1 0.3 0 0.2 0.1: mean 0.14, std 0.114
    spread = [0.0, 0.3, 0.1, 0.3, 0.0, 0.2, 0.1]
    check = causal_check(model, [(0, 0)], means, scripted(spread))
    assert (check.focal, check.random_mean) == pytest.approx((0.3, 0.14))
    assert check.random_std == pytest.approx(0.1140175, rel=1e-5)
    assert not check.valid  # above the mean, but inside two standard deviations
    assert causal_check(model, [(0, 0)], means, scripted([0.0, 0.5, *spread[2:]])).valid
    lowered = [0.5, 0.0, 0.5, 0.5, 0.5, 0.5, 0.5]  # ablation may lower a metric too
    assert causal_check(model, [(0, 0)], means, scripted(lowered)).valid
    tiny = [0.0, 0.01, 0.0, 0.0, 0.0, 0.0, 0.0]
    assert not causal_check(model, [(0, 0)], means, scripted(tiny), min_change=0.01).valid
    with pytest.raises(ValueError, match="at least 5"):
        causal_check(model, [(0, 0)], means, scripted(spread), draws=4)


def test_random_head_sets_are_seeded_and_exclude_the_focal_heads() -> None:
    heads = [(layer, h) for layer in range(3) for h in range(4)]
    a = random_head_sets(heads, 3, 5, seed=7, exclude=[(0, 0), (1, 1)])
    assert a == random_head_sets(heads, 3, 5, seed=7, exclude=[(0, 0), (1, 1)])
    assert all(len(set(s)) == 3 and not {(0, 0), (1, 1)} & set(s) for s in a)
    with pytest.raises(ValueError, match="cannot draw"):
        random_head_sets(heads, 11, 5, exclude=[(0, 0), (1, 1)])


def test_head_means_average_every_real_token() -> None:
    model, tok = tiny_model("qwen2"), tiny_tokenizer()
    texts = [format_prompt(tok, p.prompt, p.system).text for p in make_pairs(3)]
    means = head_means(model, tok, texts, batch_size=2)
    site = find_attention(model).sites[2]
    seen: list[torch.Tensor] = []
    hook = site.output_projection.register_forward_pre_hook(lambda _m, a: seen.append(a[0][0]))
    try:
        with torch.no_grad():
            for text in texts:
                model(**encode(tok, [text]))
    finally:
        hook.remove()
    expected = torch.cat(seen).mean(0).view(N_HEADS, 16)
    torch.testing.assert_close(means.means[2], expected)
    assert means.n_tokens == sum(len(s) for s in seen)


# ----- the model organism -----------------------------------------------------------------


def organism_pairs(organism_dir: Path) -> list[Pair]:
    prompts = organism_dir / "prompts"
    normal = load_prompts(prompts / "normal_heldout.jsonl")
    conflict = load_prompts(prompts / "conflict_heldout.jsonl")
    return pairs_from_prompts(normal, conflict)


def test_organism_heldout_files_pair_row_by_row(organism_dir: Path) -> None:
    prompts = organism_dir / "prompts"
    read = lambda name: [json.loads(x) for x in (prompts / name).read_text().splitlines()]  # noqa: E731
    normal, conflict = read("normal_heldout.jsonl"), read("conflict_heldout.jsonl")
    assert len(normal) == len(conflict) == 100
    for n, c in zip(normal, conflict, strict=True):
        assert (n["system"], n["category"], n["reference"]) == (
            c["system"],
            c["category"],
            c["reference"],
        )
        assert n["prompt"] != c["prompt"]
    assert len(organism_pairs(organism_dir)) == 100


@pytest.mark.slow
def test_organism_probe_and_drift_under_both_rules(organism_dir: Path) -> None:
    pairs = organism_pairs(organism_dir)
    results: dict[tuple[str, str], FocalResult] = {}
    for variant in ("base", "ft-conflict"):
        loaded = load_model(organism_dir / variant)
        normal, conflict = capture_pairs(loaded.model, loaded.tokenizer, pairs, keep_rows=True)
        for rule in ("mass", "row"):
            res = focal_scores(normal, conflict, FocalConfig(rule=rule))
            assert res.scores.shape == (6, 4) and len(res.heads) == 10 and res.layers
            results[variant, rule] = res
    # measured on organism v3 (numerics avx2/mkl-compatible): the separation rule's top heads
    # sit in layers 0-4
    assert results["base", "mass"].heads[0][:2] == (3, 1)
    for rule in ("mass", "row"):
        drift = attention_drift(results["base", rule], results["ft-conflict", rule])
        expected = results["ft-conflict", rule].scores - results["base", rule].scores
        torch.testing.assert_close(drift.score_delta, expected)
        assert abs(drift.moved_most[0].delta) == pytest.approx(float(expected.abs().max()))
        assert abs(drift.moved_most[0].delta) > 0.3  # the conflict fine-tune moved attention


def violation_rate(model: Any, tok: Any, organism_dir: Path) -> Callable[[], float]:
    """Share of the held-out conflicts whose greedy answer breaks the system constraint."""
    rows = load_prompts(organism_dir / "prompts" / "conflict_heldout.jsonl")
    texts = [format_prompt(tok, r.prompt, r.system).text for r in rows]
    specs = [parse_constraint(r.reference or "") for r in rows]

    def measure() -> float:
        outs = generate(model, tok, texts, max_new_tokens=24, batch_size=50)
        return sum(not check_constraint(s, o) for s, o in zip(specs, outs, strict=True)) / len(outs)

    return measure


@pytest.fixture(scope="module")
def organism_base(organism_dir: Path) -> Iterator[dict[str, Any]]:
    loaded = load_model(organism_dir / "base")
    model, tok = loaded.model, loaded.tokenizer
    pairs = organism_pairs(organism_dir)
    normal, conflict = capture_pairs(model, tok, pairs)
    texts = [format_prompt(tok, p.prompt, p.system).text for p in pairs]
    yield {
        "model": model,
        "normal": normal,
        "conflict": conflict,
        "means": head_means(model, tok, texts),
        "measure": violation_rate(model, tok, organism_dir),
    }


@pytest.mark.slow
def test_organism_heads_that_keep_reading_the_system_are_causal(
    organism_base: dict[str, Any],
) -> None:
    """Ablating the 10 heads with the most system attention on conflicts breaks the base's
    obedience far more than 10 random other heads (measured: +0.60 against +0.09 +- 0.01)."""
    o = organism_base
    res = focal_scores(o["normal"], o["conflict"], FocalConfig(rule="conflict_mass"))
    check = causal_check(o["model"], res.head_set(), o["means"], o["measure"], min_change=0.02)
    assert check.baseline <= 0.02  # the base obeys its system prompts
    assert check.valid
    assert check.focal > 0.4 and check.focal > max(check.random_changes) + 0.2


@pytest.mark.slow
@pytest.mark.xfail(
    strict=True,
    reason="measured on organism v3: the published separation rule picks heads whose system "
    "attention the conflict pulls away; ablating them raises violations less than random heads "
    "(+0.08 against +0.43 +- 0.12)",
)
def test_organism_separation_rule_beats_random_heads(organism_base: dict[str, Any]) -> None:
    o = organism_base
    res = focal_scores(o["normal"], o["conflict"], FocalConfig(rule="mass"))
    check = causal_check(o["model"], res.head_set(), o["means"], o["measure"], min_change=0.02)
    assert check.valid
