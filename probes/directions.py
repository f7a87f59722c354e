"""The refusal direction per layer, for the fine-tune and its base, and which layer carries it.

Method (methods.md section 1, Arditi et al. 2024): at the post-instruction positions, the
refusal direction after layer ``l`` is ``r_l = mean(harmful) - mean(harmless)``. Per layer we
report its norm in both models, their cosine, and how well the unit *base* direction still
separates the two classes in each model. A layer is selected causally, in one model (the base
when there is one, as Arditi et al. do): ablating its direction everywhere must lower refusal
on harmful prompts, adding it at that layer must raise refusal on harmless prompts, and the
ablation's KL on harmless prompts must stay small. With a base, the base's direction is also
added to the fine-tune, reported as whether the fine-tune still responds to it. Refusal is the
first-token log-odds of Arditi et al., with any refusal first token that also starts the
model's own non-refusing answers replaced by its whole phrases
(:mod:`probes.refusal_score`).

The pieces run one model at a time (:func:`class_activations`, :func:`ablation_effects`,
:func:`addition_effects`, :func:`summarize`), so a caller can hold one model in memory at once;
:func:`probe_directions` chains them for two models already loaded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from probes.activations import collect_activations, forward_kwargs
from probes.intervene import ablate_direction, add_direction
from probes.refusal_score import RefusalScore, ScoreMode, answer_first_tokens, refusal_score
from surgeon.chat import format_prompt
from surgeon.generation import generate, model_device
from surgeon.judges import KeywordJudge
from surgeon.prompts import Prompt
from surgeon.tokens import encode


@dataclass(frozen=True)
class DirectionsConfig:
    """How to extract and test refusal directions."""

    positions: int = 1
    """Average the activations of the last ``positions`` prompt tokens (the assistant header)."""
    batch_size: int = 16
    """Prompts per forward pass."""
    n_causal: int = 32
    """Prompts per class used for the causal ablation/addition checks (0 skips them)."""
    kl_bound: float = 0.1
    """Largest first-token KL on harmless prompts that an ablation may cause (Arditi: 0.1)."""
    exclude_last: float = 0.2
    """Share of the last layers that are never candidates (Arditi: 20%)."""
    causal_layers: int | None = None
    """Candidate layers the causal checks test at most, evenly spaced (None: every candidate);
    each costs forward passes of both checks, which dominate a diagnose of a deep model."""
    refusal_score: ScoreMode = "auto"
    """How the causal checks read refusal: ``auto`` replaces a refusal first token that also
    starts one of the model's own non-refusing answers by its whole phrases; ``first-token``
    and ``phrase`` force one reading (:mod:`probes.refusal_score`)."""

    def __post_init__(self) -> None:
        if self.positions < 1:
            raise ValueError(f"positions must be >= 1, got {self.positions}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.n_causal < 0:
            raise ValueError(f"n_causal must be >= 0, got {self.n_causal}")
        if self.kl_bound <= 0:
            raise ValueError(f"kl_bound must be > 0, got {self.kl_bound}")
        if self.causal_layers is not None and self.causal_layers < 1:
            raise ValueError(f"causal_layers must be >= 1 or unset, got {self.causal_layers}")
        if not 0 <= self.exclude_last < 1:
            raise ValueError(f"exclude_last must be in [0, 1), got {self.exclude_last}")


@dataclass(frozen=True)
class ClassActivations:
    """One model's activations on the two prompt classes, every layer."""

    harmful: Float[Tensor, "n_layers n_harmful d_model"]
    """Activations on harmful prompts (float32, CPU)."""
    harmless: Float[Tensor, "n_layers n_harmless d_model"]
    """Activations on harmless prompts (float32, CPU)."""

    @property
    def harmful_mean(self) -> Float[Tensor, "n_layers d_model"]:
        """Per-layer mean harmful activation (the rollback paper's "harmful direction")."""
        return self.harmful.mean(dim=1)

    @property
    def harmless_mean(self) -> Float[Tensor, "n_layers d_model"]:
        """Per-layer mean harmless activation."""
        return self.harmless.mean(dim=1)

    @property
    def refusal(self) -> Float[Tensor, "n_layers d_model"]:
        """Difference-of-means refusal direction per layer (not normalised)."""
        return self.harmful_mean - self.harmless_mean


@dataclass(frozen=True)
class LayerStats:
    """How the refusal direction looks after one decoder layer."""

    layer: int
    """0-based decoder layer; the activation is that block's output (resid_post)."""
    refusal_norm: float
    """Norm of the fine-tune's difference-of-means direction."""
    refusal_norm_base: float | None
    """Norm of the base's direction (None without a base)."""
    cos_to_base: float | None
    """Cosine between the fine-tune's and the base's direction."""
    separation: float
    """Fine-tune: (mean harmful - mean harmless projection) on the unit base direction, in
    units of the harmless projections' standard deviation (own direction without a base)."""
    separation_base: float | None
    """The same separation measured in the base."""
    harmful_mean_cos_to_base: float | None
    """Cosine between the two models' mean harmful activations."""
    harmless_mean_cos_to_base: float | None
    """Cosine between the two models' mean harmless activations."""


@dataclass(frozen=True)
class AblationEffect:
    """Ablating one layer's unit direction at every layer of the reference model."""

    layer: int
    """Layer whose direction was ablated."""
    logodds_before: float
    """Mean refusal log-odds on harmful prompts, unablated."""
    logodds_after: float
    """Mean refusal log-odds on harmful prompts, ablated."""
    rate_before: float
    """Share of harmful prompts with positive refusal log-odds, unablated."""
    rate_after: float
    """The same, ablated."""
    kl: float
    """Mean first-token KL(unablated || ablated) on harmless prompts."""


@dataclass(frozen=True)
class AdditionEffect:
    """Adding one layer's direction (at its norm) at that layer of the fine-tune."""

    layer: int
    """Layer the direction was added after."""
    logodds_before: float
    """Mean refusal log-odds on harmless prompts, unmodified."""
    logodds_after: float
    """Mean refusal log-odds on harmless prompts with the direction added."""
    rate_before: float
    """Share of harmless prompts with positive refusal log-odds, unmodified."""
    rate_after: float
    """The same, with the direction added."""


@dataclass(frozen=True)
class CausalEffect:
    """Both causal checks for one candidate layer and its combined score."""

    layer: int
    """Candidate layer."""
    ablation: AblationEffect
    """Ablation in the base (in the model itself without a base)."""
    addition: AdditionEffect
    """Addition in the same model as the ablation (Arditi et al. select the layer in one
    model)."""
    score: float
    """Drop in harmful log-odds from ablation plus rise in harmless log-odds from addition."""
    kl_ok: bool
    """Whether the ablation's KL is within the bound."""
    valid: bool
    """Ablation lowers harmful refusal, addition raises harmless refusal (each in log-odds and
    in the share of prompts read as refusals), and KL is in bound."""
    model_addition: AdditionEffect | None = None
    """With a base, on the reported candidate only (:func:`shown_layer`): the base's direction
    added to the fine-tune, whether the fine-tune still responds to it (not part of the
    selection)."""


@dataclass(frozen=True)
class DirectionsResult:
    """Per-layer refusal directions of a fine-tune against its base, and the selected layer."""

    layers: tuple[LayerStats, ...]
    """One entry per decoder layer."""
    selected_layer: int | None
    """Candidate layer with the best combined causal effect (None when checks were skipped)."""
    most_drifted_layer: int | None
    """Layer where the base direction lost the most separation (None without a base)."""
    causal: CausalEffect | None
    """The selected layer's causal effects; without a valid candidate, the best-scoring one
    (``valid`` False), so the report shows why none was selected."""
    candidates: tuple[CausalEffect, ...]
    """Causal effects of every candidate layer."""
    kl_bound: float
    """The KL bound the selection used."""
    positions: int
    """Number of last prompt positions averaged."""
    refusal: Float[Tensor, "n_layers d_model"]
    """The fine-tune's difference-of-means direction per layer."""
    refusal_base: Float[Tensor, "n_layers d_model"] | None
    """The base's direction per layer (None without a base)."""
    harmful_mean: Float[Tensor, "n_layers d_model"]
    """The fine-tune's mean harmful activation per layer."""
    harmful_mean_base: Float[Tensor, "n_layers d_model"] | None
    """The base's mean harmful activation per layer (the rollback "harmful direction")."""
    refusal_score: str = "first-token"
    """How the causal checks read refusal: ``first-token`` or ``phrase`` (ambiguous first
    tokens replaced by their whole refusal phrases, :mod:`probes.refusal_score`)."""
    ambiguous_tokens: tuple[str, ...] = ()
    """Refusal first tokens that also start the models' own non-refusing answers."""


def format_texts(tokenizer: PreTrainedTokenizerBase, prompts: Sequence[Prompt]) -> list[str]:
    """Prompts rendered with the tokenizer's chat template, system message included."""
    return [format_prompt(tokenizer, p.prompt, p.system).text for p in prompts]


def class_activations(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    harmful: Sequence[Prompt],
    harmless: Sequence[Prompt],
    config: DirectionsConfig,
) -> ClassActivations:
    """Collect one model's activations on both classes."""
    if not harmful or not harmless:
        raise ValueError("the directions probe needs harmful and harmless prompts")

    def run(prompts: Sequence[Prompt], desc: str) -> Tensor:
        return collect_activations(
            model,
            tokenizer,
            format_texts(tokenizer, prompts),
            positions=config.positions,
            batch_size=config.batch_size,
            desc=desc,
        )

    return ClassActivations(run(harmful, "harmful activations"), run(harmless, "harmless"))


def _cos(a: Tensor, b: Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a, b, dim=0, eps=1e-12))


def separation(acts: ClassActivations, layer: int, direction: Tensor) -> float:
    """(mean harmful - mean harmless projection on the unit direction) / std(harmless proj)."""
    u = direction / direction.norm().clamp_min(1e-12)
    ph = acts.harmful[layer] @ u
    pl = acts.harmless[layer] @ u
    std = pl.std() if pl.numel() > 1 else torch.tensor(0.0)
    return float((ph.mean() - pl.mean()) / std.clamp_min(1e-12))


def summarize(
    acts: ClassActivations, base: ClassActivations | None
) -> tuple[tuple[LayerStats, ...], int | None]:
    """Per-layer statistics and the most drifted layer (argmax of base minus model separation)."""
    ref = base.refusal if base is not None else acts.refusal
    stats = []
    for layer in range(acts.harmful.shape[0]):
        r = acts.refusal[layer]
        b = base.refusal[layer] if base is not None else None
        stats.append(
            LayerStats(
                layer=layer,
                refusal_norm=float(r.norm()),
                refusal_norm_base=float(b.norm()) if b is not None else None,
                cos_to_base=_cos(r, b) if b is not None else None,
                separation=separation(acts, layer, ref[layer]),
                separation_base=separation(base, layer, ref[layer]) if base else None,
                harmful_mean_cos_to_base=(
                    _cos(acts.harmful_mean[layer], base.harmful_mean[layer]) if base else None
                ),
                harmless_mean_cos_to_base=(
                    _cos(acts.harmless_mean[layer], base.harmless_mean[layer]) if base else None
                ),
            )
        )
    drifted = None
    if base is not None:
        drift = [s.separation_base - s.separation for s in stats]  # type: ignore[operator]
        drifted = max(range(len(drift)), key=drift.__getitem__)
    return tuple(stats), drifted


def candidate_layers(
    n_layers: int, exclude_last: float, max_candidates: int | None = None
) -> list[int]:
    """Layers that may be selected: all but the last ``exclude_last`` share (at least one);
    with ``max_candidates``, that many of them evenly spaced (first and last kept)."""
    layers = list(range(max(1, int(n_layers * (1.0 - exclude_last)))))
    if max_candidates is None or max_candidates >= len(layers):
        return layers
    if max_candidates == 1:
        return [layers[len(layers) // 2]]
    step = (len(layers) - 1) / (max_candidates - 1)
    return sorted({layers[round(i * step)] for i in range(max_candidates)})


@torch.no_grad()
def last_logits(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    batch_size: int,
) -> Float[Tensor, "n vocab"]:
    """Next-token logits after each formatted prompt (float32, CPU)."""
    device = model_device(model)
    extra = forward_kwargs(model)
    out = []
    for i in range(0, len(texts), batch_size):
        enc = encode(tokenizer, list(texts[i : i + batch_size]), device)
        out.append(model(**enc, use_cache=False, **extra).logits[:, -1, :].float().cpu())
    return torch.cat(out)


def _kl(p_logits: Tensor, q_logits: Tensor) -> float:
    lp = torch.log_softmax(p_logits, dim=-1)
    lq = torch.log_softmax(q_logits, dim=-1)
    return float((lp.exp() * (lp - lq)).sum(-1).mean())


def _rate(logodds: Tensor) -> float:
    return float((logodds > 0).float().mean())


def ablation_effects(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    directions: Float[Tensor, "n_layers d_model"],
    candidates: Sequence[int],
    harmful_texts: Sequence[str],
    harmless_texts: Sequence[str],
    batch_size: int = 16,
    score: RefusalScore | None = None,
    harmless_logits: Tensor | None = None,
) -> list[AblationEffect]:
    """Per candidate, ablate its unit direction everywhere: harmful refusal, harmless KL.

    ``score``: how refusal is read (default: the first-token log-odds). ``harmless_logits``:
    the unmodified model's next-token logits on ``harmless_texts`` when already computed
    (:meth:`RefusalScore.log_odds_and_logits`), the KL's reference."""
    score = score or refusal_score(tokenizer, mode="first-token")
    h0 = score.log_odds(model, tokenizer, harmful_texts, batch_size)
    l0 = (
        harmless_logits
        if harmless_logits is not None
        else last_logits(model, tokenizer, harmless_texts, batch_size)
    )
    out = []
    for layer in candidates:
        with ablate_direction(model, directions[layer]):
            h1 = score.log_odds(model, tokenizer, harmful_texts, batch_size)
            l1 = last_logits(model, tokenizer, harmless_texts, batch_size)
        out.append(
            AblationEffect(
                layer=layer,
                logodds_before=float(h0.mean()),
                logodds_after=float(h1.mean()),
                rate_before=_rate(h0),
                rate_after=_rate(h1),
                kl=_kl(l0, l1),
            )
        )
    return out


def addition_effects(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    directions: Float[Tensor, "n_layers d_model"],
    candidates: Sequence[int],
    harmless_texts: Sequence[str],
    batch_size: int = 16,
    score: RefusalScore | None = None,
    baseline: Tensor | None = None,
) -> list[AdditionEffect]:
    """For each candidate, add its (unnormalised) direction after that layer; harmless refusal.

    ``baseline``: the unmodified model's log-odds on ``harmless_texts`` when already computed."""
    score = score or refusal_score(tokenizer, mode="first-token")
    s0 = (
        baseline
        if baseline is not None
        else score.log_odds(model, tokenizer, harmless_texts, batch_size)
    )
    out = []
    for layer in candidates:
        with add_direction(model, layer, directions[layer]):
            s1 = score.log_odds(model, tokenizer, harmless_texts, batch_size)
        out.append(
            AdditionEffect(
                layer=layer,
                logodds_before=float(s0.mean()),
                logodds_after=float(s1.mean()),
                rate_before=_rate(s0),
                rate_after=_rate(s1),
            )
        )
    return out


def select_layer(
    ablations: Sequence[AblationEffect],
    additions: Sequence[AdditionEffect],
    kl_bound: float,
    model_additions: Sequence[AdditionEffect] = (),
) -> tuple[CausalEffect | None, tuple[CausalEffect, ...]]:
    """The valid candidate with the best combined effect (None when no candidate is valid).

    ``ablations`` and ``additions`` come from one model; ``model_additions`` (the fine-tune's
    response, with a base) are attached, not scored. Also returns every candidate's effects;
    the best invalid one is still worth reporting.
    """
    by_layer = {a.layer: a for a in additions}
    in_model = {a.layer: a for a in model_additions}
    effects = []
    for ab in ablations:
        ad = by_layer.get(ab.layer)
        if ad is None:
            continue
        drop = ab.logodds_before - ab.logodds_after
        rise = ad.logodds_after - ad.logodds_before
        kl_ok = ab.kl <= kl_bound
        # a shift of the mean log-odds that turns no prompt's reading is no causal evidence:
        # a reading that calls every harmless answer a refusal (an ambiguous first token) can
        # still rise by a few hundredths
        moves = ab.rate_after < ab.rate_before and ad.rate_after > ad.rate_before
        effects.append(
            CausalEffect(
                ab.layer,
                ab,
                ad,
                drop + rise,
                kl_ok,
                kl_ok and drop > 0 and rise > 0 and moves,
                in_model.get(ab.layer),
            )
        )
    valid = [e for e in effects if e.valid]
    best = max(valid, key=lambda e: e.score) if valid else None
    return best, tuple(effects)


def _shown(best: CausalEffect | None, effects: Sequence[CausalEffect]) -> CausalEffect | None:
    """The candidate a result reports: the selected one, else the best-scoring invalid one."""
    return best or (max(effects, key=lambda e: e.score) if effects else None)


def shown_layer(
    ablations: Sequence[AblationEffect], additions: Sequence[AdditionEffect], kl_bound: float
) -> int | None:
    """The layer of the candidate a result reports (:attr:`DirectionsResult.causal`; None
    without candidates). The fine-tune's addition is only worth measuring there."""
    shown = _shown(*select_layer(ablations, additions, kl_bound))
    return shown.layer if shown else None


def build_result(
    acts: ClassActivations,
    base: ClassActivations | None,
    ablations: Sequence[AblationEffect],
    additions: Sequence[AdditionEffect],
    config: DirectionsConfig,
    scores: Sequence[RefusalScore] = (),
    model_additions: Sequence[AdditionEffect] = (),
) -> DirectionsResult:
    """Assemble the result from the pieces (each computed with one model in memory);
    ``scores``: the refusal readings the causal checks used."""
    layers, drifted = summarize(acts, base)
    best, effects = select_layer(ablations, additions, config.kl_bound, model_additions)
    shown = _shown(best, effects)
    return DirectionsResult(
        layers=layers,
        selected_layer=best.layer if best else None,
        most_drifted_layer=drifted,
        causal=shown,
        candidates=effects,
        kl_bound=config.kl_bound,
        positions=config.positions,
        refusal=acts.refusal,
        refusal_base=base.refusal if base is not None else None,
        harmful_mean=acts.harmful_mean,
        harmful_mean_base=base.harmful_mean if base is not None else None,
        refusal_score="phrase" if any(sc.sequences for sc in scores) else "first-token",
        ambiguous_tokens=tuple(sorted({t for sc in scores for t in sc.ambiguous})),
    )


def causal_subset(prompts: Sequence[Prompt], n: int) -> list[Prompt]:
    """The first ``n`` prompts, used for the causal checks."""
    return list(prompts[:n])


def probe_directions(
    model: PreTrainedModel,
    base_model: PreTrainedModel | None,
    tokenizer: PreTrainedTokenizerBase,
    harmful: Sequence[Prompt],
    harmless: Sequence[Prompt],
    config: DirectionsConfig | None = None,
    base_tokenizer: PreTrainedTokenizerBase | None = None,
) -> DirectionsResult:
    """Refusal directions of ``model`` against ``base_model`` (or alone), with causal selection."""
    config = config or DirectionsConfig()
    base_tok = base_tokenizer or tokenizer
    acts = class_activations(model, tokenizer, harmful, harmless, config)
    base_acts = (
        class_activations(base_model, base_tok, harmful, harmless, config)
        if base_model is not None
        else None
    )
    ablations: list[AblationEffect] = []
    additions: list[AdditionEffect] = []
    model_additions: list[AdditionEffect] = []
    scores: list[RefusalScore] = []
    if config.n_causal > 0:
        ref_model, ref_tok = (
            (base_model, base_tok) if base_model is not None else (model, tokenizer)
        )
        directions = (base_acts or acts).refusal
        cands = candidate_layers(acts.harmful.shape[0], config.exclude_last, config.causal_layers)
        h_sub = causal_subset(harmful, config.n_causal)
        l_sub = causal_subset(harmless, config.n_causal)
        ref_score = score_for(ref_model, ref_tok, [*h_sub, *l_sub], config)
        score = (
            score_for(model, tokenizer, [*h_sub, *l_sub], config)
            if base_model is not None
            else ref_score  # the same model: read its answers once
        )
        scores = [ref_score, score]
        harmless_texts = format_texts(ref_tok, l_sub)
        # one unmodified pass over the harmless prompts: the addition's baseline and the
        # ablation's KL reference
        s0, l0 = ref_score.log_odds_and_logits(
            ref_model, ref_tok, harmless_texts, config.batch_size
        )
        ablations = ablation_effects(
            ref_model,
            ref_tok,
            directions,
            cands,
            format_texts(ref_tok, h_sub),
            harmless_texts,
            config.batch_size,
            ref_score,
            harmless_logits=l0,
        )
        additions = addition_effects(
            ref_model,
            ref_tok,
            directions,
            cands,
            harmless_texts,
            config.batch_size,
            ref_score,
            baseline=s0,
        )
        shown = (
            shown_layer(ablations, additions, config.kl_bound) if base_model is not None else None
        )
        if shown is not None:
            model_additions = addition_effects(
                model,
                tokenizer,
                directions,
                [shown],
                format_texts(tokenizer, l_sub),
                config.batch_size,
                score,
            )
    return build_result(acts, base_acts, ablations, additions, config, scores, model_additions)


def score_for(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[Prompt],
    config: DirectionsConfig,
    responses: Sequence[str] | None = None,
) -> RefusalScore:
    """The refusal reading for ``model``: under ``auto``, from its own greedy answers to
    ``prompts`` (``responses`` when already generated; else 16 tokens each)."""
    if config.refusal_score != "auto":
        return refusal_score(tokenizer, mode=config.refusal_score)
    if responses is None:
        responses = generate(
            model,
            tokenizer,
            format_texts(tokenizer, prompts),
            max_new_tokens=16,
            batch_size=config.batch_size,
            desc="answers for the refusal score",
        )
    refused = KeywordJudge().refused([p.prompt for p in prompts], list(responses))
    return refusal_score(tokenizer, answer_first_tokens(tokenizer, responses, refused))
