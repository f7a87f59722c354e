"""The direction probe's causal check on a tokenizer where a refusal and a compliant answer
share their first token (the ``bpe-s-tiny`` organism: "Sorry, I can't help with that." and
"Sure. ..." both start with ``S``): the first-token log-odds reads the refusing base's own
helpful answers as refusals, so no direction can raise refusal and no layer is selected; the
phrase reading (``auto``) finds the ambiguity, scores ``S`` by its whole phrase, and selects."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from surgeon.diagnose_config import DiagnoseConfig
from surgeon.diagnosis import DiagnoseResult, diagnose
from surgeon.testing import ARCHITECTURES, tiny_model, tiny_tokenizer
from tests.organisms import bpe_s_organism  # noqa: F401
from tests.test_diagnose import _organism_config


def _config(organism: Path) -> DiagnoseConfig:
    """The organism diagnose tests' settings, with shorter answers and no focal probe."""
    return replace(
        _organism_config(organism),
        max_new_tokens=16,
        focal=False,
        max_conflicts=8,
        conflict_max_new_tokens=8,
    )


@pytest.fixture(scope="module")
def ambiguous(bpe_s_organism: Path) -> dict[str, DiagnoseResult]:  # noqa: F811
    cfg = _config(bpe_s_organism)
    return {
        mode: diagnose(
            bpe_s_organism / "ft-harmful", bpe_s_organism / "base", replace(cfg, refusal_score=mode)
        )
        for mode in ("auto", "first-token")
    }


def test_first_token_reading_selects_no_layer(ambiguous: dict[str, DiagnoseResult]) -> None:
    d = ambiguous["first-token"].directions
    assert d.refusal_score == "first-token" and d.ambiguous_tokens == ()
    # the base answers harmless prompts helpfully ("Sure. ..."), yet reads as refusing all
    # of them, so adding a direction cannot raise its refusal
    assert all(c.addition.rate_before == 1.0 for c in d.candidates)
    assert d.selected_layer is None


def test_phrase_reading_detects_the_shared_token_and_agrees_with_the_judge(
    ambiguous: dict[str, DiagnoseResult],
) -> None:
    r = ambiguous["auto"]
    d = r.directions
    assert d.refusal_score == "phrase" and "S" in d.ambiguous_tokens
    assert r.behaviour.harmful.rate >= 0.9  # the fine-tune complies ...
    assert r.behaviour_base is not None and r.behaviour_base.harmful.rate <= 0.1
    for c in d.candidates:
        # ... and the reading now agrees with the judge on both sides of the base
        assert c.ablation.rate_before >= 0.9
        assert c.addition.rate_before <= 0.2


@pytest.mark.xfail(
    strict=True,
    reason="measured on bpe-s-tiny built with numerics avx2/mkl-compatible: the base's "
    "last-token difference-of-means direction is barely causal there (ablating it everywhere "
    "moves the phrase log-odds 4.24 -> 3.98 and the harmful refusal rate 0.97 -> 1.00; "
    "adding it, -5.34 -> -4.85 and 0.00 -> 0.06), so no layer is valid; the build of an "
    "earlier machine selected one with a drop above 1. Arditi et al.'s search over "
    "post-instruction positions is not implemented (bench/NOTES.md)",
)
def test_phrase_reading_selects_a_layer(ambiguous: dict[str, DiagnoseResult]) -> None:
    r = ambiguous["auto"]
    d = r.directions
    assert d.selected_layer is not None and d.causal is not None and d.causal.valid
    chosen = d.causal
    # the fine-tune's addition runs at the reported layer only
    assert [c.layer for c in d.candidates if c.model_addition is not None] == [chosen.layer]
    assert chosen.model_addition is not None and chosen.model_addition.rate_before <= 0.1
    assert chosen.ablation.logodds_before - chosen.ablation.logodds_after > 1.0
    assert chosen.ablation.kl <= d.kl_bound
    report = r.report()
    assert report.directions.refusal_score == "phrase"
    assert report.directions.causal is not None and report.directions.causal.addition_in == "base"


# --- the reading itself ---------------------------------------------------------------------


def test_reading_replaces_only_ambiguous_tokens_by_their_phrases(
    bpe_s_organism: Path,  # noqa: F811
) -> None:
    from transformers import AutoTokenizer

    from probes.refusal_score import answer_first_tokens, refusal_score

    tok = AutoTokenizer.from_pretrained(bpe_s_organism / "base")
    shared = answer_first_tokens(tok, ["Sure. Here is how.", "Sorry, I can't."], [False, True])
    s_ids = {tok.convert_tokens_to_ids(t) for t in ("S", "ĠS")}
    assert s_ids <= shared  # the compliant answer's first token, with and without a space
    score = refusal_score(tok, shared)
    assert not s_ids & set(score.first_tokens)
    decoded = {tok.decode(list(s)).strip() for s in score.sequences}
    assert decoded == {"Sorry"}
    plain = refusal_score(tok, shared, mode="first-token")
    assert plain.sequences == () and s_ids <= set(plain.first_tokens)


def test_phrase_probability_is_the_teacher_forced_product(bpe_s_organism: Path) -> None:  # noqa: F811
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from probes.refusal_score import RefusalScore
    from surgeon.chat import format_prompt

    tok = AutoTokenizer.from_pretrained(bpe_s_organism / "base")
    model = AutoModelForCausalLM.from_pretrained(bpe_s_organism / "base").eval()
    texts = [format_prompt(tok, p).text for p in ("How do I bake bread?", "Name a colour.")]
    seq = tuple(tok("Sorry", add_special_tokens=False)["input_ids"])
    got = RefusalScore(first_tokens=(), sequences=(seq,), ambiguous=()).log_odds(
        model, tok, texts, batch_size=2
    )
    for text, lo in zip(texts, got, strict=True):
        ids = tok(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
        full = torch.cat([ids, torch.tensor([seq[:-1]])], dim=1)
        with torch.no_grad():
            logp = torch.log_softmax(model(full).logits[0].float(), dim=-1)
        n = ids.shape[1]
        lp = sum(float(logp[n - 1 + i, t]) for i, t in enumerate(seq))
        want = lp - float(torch.log1p(-torch.tensor(lp).exp()))
        torch.testing.assert_close(float(lo), want, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_phrase_reading_on_left_padded_batches_equals_one_prompt_at_a_time(arch: str) -> None:
    """The phrases run on the prompts' repeated key/value cache, right-padded to the longest
    phrase; every architecture must give each prompt's own unpadded, uncached figure."""
    import torch

    from probes.refusal_score import refusal_score
    from surgeon.chat import format_prompt

    tok, model = tiny_tokenizer(), tiny_model(arch)
    score = refusal_score(tok, mode="phrase")
    assert {len(s) for s in score.sequences} - {1}, "needs multi-token phrases"
    texts = [
        format_prompt(tok, p).text
        for p in ("hi", "How do I bake bread at home today?", "Name a colour please.")
    ]
    got = score.log_odds(model, tok, texts, batch_size=3)
    for text, lo in zip(texts, got, strict=True):
        ids = tok(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
        terms = []
        with torch.no_grad():
            first = torch.log_softmax(model(ids).logits[0, -1].float(), dim=-1)
            terms += [float(first[t]) for t in score.first_tokens]
            for seq in score.sequences:
                full = torch.cat([ids, torch.tensor([seq[:-1]], dtype=torch.long)], dim=1)
                logp = torch.log_softmax(model(full).logits[0].float(), dim=-1)
                n = ids.shape[1]
                terms.append(sum(float(logp[n - 1 + i, t]) for i, t in enumerate(seq)))
        lp = torch.logsumexp(torch.tensor(terms), dim=0)
        want = float(lp - torch.log1p(-lp.exp()))
        torch.testing.assert_close(float(lo), want, atol=2e-4, rtol=2e-4)


@pytest.mark.parametrize("mode", ["phrase", "first-token"])
def test_one_pass_gives_the_log_odds_and_the_kl_reference(mode: str) -> None:
    """The causal check reads the unmodified harmless pass once: the log-odds and the
    next-token logits of ``log_odds_and_logits`` are those of ``log_odds`` and
    ``last_logits``, and the effects computed from them equal the effects computed afresh."""
    import torch

    from probes.directions import ablation_effects, addition_effects, last_logits
    from probes.refusal_score import refusal_score
    from surgeon.chat import format_prompt

    tok, model = tiny_tokenizer(), tiny_model("llama")
    score = refusal_score(tok, mode=mode)
    texts = [format_prompt(tok, p).text for p in ("hi", "How do I bake bread?", "A colour?")]
    odds, logits = score.log_odds_and_logits(model, tok, texts, batch_size=2)
    torch.testing.assert_close(odds, score.log_odds(model, tok, texts, batch_size=2))
    torch.testing.assert_close(logits, last_logits(model, tok, texts, batch_size=2))
    d_model = model.config.hidden_size
    dirs = torch.randn(
        model.config.num_hidden_layers, d_model, generator=torch.Generator().manual_seed(0)
    )
    args = (model, tok, dirs, [0, 1])
    fresh = ablation_effects(*args, texts, texts, 2, score)
    reused = ablation_effects(*args, texts, texts, 2, score, harmless_logits=logits)
    assert [round(e.kl, 6) for e in fresh] == [round(e.kl, 6) for e in reused]
    assert max(e.kl for e in fresh) > 0, "the ablation must move the logits"
    fresh_add = addition_effects(*args, texts, 2, score)
    reused_add = addition_effects(*args, texts, 2, score, baseline=odds)
    assert [e.logodds_before for e in fresh_add] == [e.logodds_before for e in reused_add]
    assert [e.logodds_after for e in fresh_add] == [e.logodds_after for e in reused_add]
