"""Focal attention heads: where a model weighs its system instruction against a conflicting user.

For pairs of prompts with the same system message, one with a normal user message and one
with a conflicting one, every layer's attention probabilities are read at the last prompt
token (the position that produces the first answer token). Three rules score each (layer,
query head):

``mass`` (default; FocalLoRA's ``Ident_IH.py``, the published rule)
    the attention mass on the system-instruction tokens, ``m``; score
    ``|mean_n(m) - mean_c(m)| / (std_n(m) + std_c(m) + eps)`` with population standard
    deviations (``np.std``), as released. Tied to the system span and readable as a share of
    attention.
``row`` (FocalLoRA's later ``GetAS.py`` ``score_heads``)
    the divergence of the last token's whole attention row between normal prompt i and
    conflict prompt i: ``0.4 * ||N - C||_F + 0.3 * mean_i |mean(N_i) - mean(C_i)| + 0.3 * KL``.
    Rows of different lengths are handled as released: every row is read from the first real
    token and all rows (normal and conflict) are cut to the shortest prompt's length, so the
    compared positions are the shared prefix (BOS, system turn, start of the user turn);
    padding is never part of a row. The KL term is, as released, between the *softmax of the
    attention probabilities* of the cut rows, summed over positions and averaged over pairs;
    the Frobenius term grows with the number of pairs. Its scores only rank heads within one run
    (and within a base/model comparison on the same pairs).
``conflict_mass`` (surgeon's, from the causal check on the model organism)
    the mean system-span mass on the *conflicting* prompts alone: the heads that keep reading
    the instruction while the user pushes against it. On the organism's base the separation
    rule picks heads whose attention the conflict pulls away (ablating its top 10 raised the
    violation rate less than random heads did), while ablating the top 10 of this rule
    raised it far more than random heads (``bench/focal.py``).

The top-k heads are focal and their layers the focal layers. Attention probabilities come
from the eager attention path, switched on for the probe only (``set_attn_implementation``,
restored in ``finally``); a forward hook on each attention module keeps only the last query
row of its probabilities, so no ``[q, k]`` matrix outlives its layer. Eager attention expands
grouped key/value heads to the query heads (``repeat_kv``), so rows are per query head.

The system span comes from the chat template and the tokenizer's offset mapping
(:func:`surgeon.chat.system_token_span`), shifted by each row's left padding; position ids
follow the attention mask, as in generation, so a padded batch reads what a single prompt
reads.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, Protocol

import torch
from jaxtyping import Float
from torch import Tensor, nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from probes.activations import forward_kwargs
from probes.heads import AttentionSite, find_attention
from surgeon.chat import format_prompt, system_token_spans
from surgeon.errors import InputError, RuntimeFailure
from surgeon.generation import model_device
from surgeon.progress import progress
from surgeon.tokens import encode

Rule = Literal["mass", "row", "conflict_mass"]
RULES: tuple[str, ...] = ("mass", "row", "conflict_mass")
DEFAULT_TOP_K = 10
"""Focal heads when the config names no count (FocalLoRA's top 10)."""


class ConflictPair(Protocol):
    """A system instruction with a normal and a conflicting user message."""

    @property
    def system(self) -> str:
        """The system instruction (the same for both messages)."""
        ...

    @property
    def prompt(self) -> str:
        """A user message the instruction does not fight."""
        ...

    @property
    def conflict(self) -> str:
        """A user message asking the model to break the instruction."""
        ...


@dataclass(frozen=True)
class Pair:
    """A plain :class:`ConflictPair`."""

    system: str
    """The system instruction."""
    prompt: str
    """The normal user message."""
    conflict: str
    """The conflicting user message."""


@dataclass(frozen=True)
class FocalConfig:
    """How the focal-head probe scores and selects heads."""

    rule: Rule = "mass"
    """``mass`` (system-span attention mass separation, the default), ``row`` (whole-row
    divergence, FocalLoRA's ``score_heads``) or ``conflict_mass`` (system-span mass on
    conflicts)."""
    top_k: int | None = None
    """Number of focal heads (clamped to the number of heads); 10 when neither this nor
    ``top_share`` is set."""
    top_share: float | None = None
    """Share of all heads that are focal, in (0, 1] (rounded up, at least one); instead of
    ``top_k``."""
    eps: float = 1e-6
    """Added to the denominators of both rules (FocalLoRA's epsilon)."""
    batch_size: int = 16
    """Prompts per forward."""

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            raise ValueError(f"rule must be one of {RULES}, got {self.rule!r}")
        if self.top_k is not None and self.top_share is not None:
            raise ValueError("set top_k or top_share, not both")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")
        if self.top_share is not None and not 0 < self.top_share <= 1:
            raise ValueError(f"top_share must be in (0, 1], got {self.top_share}")
        if self.eps <= 0:
            raise ValueError(f"eps must be > 0, got {self.eps}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")

    def k_of(self, n_total: int) -> int:
        """How many heads are focal among ``n_total``."""
        if self.top_share is not None:
            return max(1, min(n_total, math.ceil(self.top_share * n_total - 1e-9)))
        return min(DEFAULT_TOP_K if self.top_k is None else self.top_k, n_total)


class FocalHead(NamedTuple):
    """One scored head."""

    layer: int
    """0-based decoder layer."""
    head: int
    """Query head within the layer."""
    score: float
    """Its score under the result's rule."""


@dataclass(frozen=True)
class AttentionCapture:
    """Last-token attention of every layer and query head over a set of prompts."""

    mass: Float[Tensor, "n_prompts n_layers n_heads"]
    """Attention probability on the system-instruction tokens (float32, on the CPU)."""
    rows: tuple[Float[Tensor, "n_layers n_heads n_keys"], ...] | None
    """Each prompt's whole last-token attention row from its first real token (no padding);
    None unless requested."""
    spans: tuple[tuple[int, int], ...]
    """Each prompt's system span [start, end) in unpadded token positions."""
    lengths: tuple[int, ...]
    """Each prompt's length in tokens."""


@dataclass(frozen=True)
class FocalResult:
    """Per-head scores and the focal heads of one model."""

    rule: str
    """The scoring rule (``mass`` or ``row``)."""
    scores: Float[Tensor, "n_layers n_heads"]
    """Score of every (layer, query head) under ``rule``."""
    mass_normal: Float[Tensor, "n_layers n_heads"]
    """Mean system-span attention mass over the normal prompts (under either rule)."""
    mass_conflict: Float[Tensor, "n_layers n_heads"]
    """Mean system-span attention mass over the conflicting prompts."""
    mass_normal_std: Float[Tensor, "n_layers n_heads"]
    """Population standard deviation of the normal prompts' mass."""
    mass_conflict_std: Float[Tensor, "n_layers n_heads"]
    """Population standard deviation of the conflicting prompts' mass."""
    heads: tuple[FocalHead, ...]
    """The focal heads, highest score first (ties: lower layer, then lower head)."""
    layers: tuple[int, ...]
    """The focal layers (holding at least one focal head), ascending."""
    n_pairs: int
    """Normal/conflict pairs measured."""
    system_tokens: float
    """Mean length of the system span in tokens."""
    prompt_tokens_normal: float
    """Mean length of the normal prompts in tokens."""
    prompt_tokens_conflict: float
    """Mean length of the conflicting prompts in tokens."""

    def ranking(self) -> list[FocalHead]:
        """Every head, highest score first."""
        return rank_heads(self.scores, self.scores.numel())

    def head_set(self) -> list[tuple[int, int]]:
        """The focal heads as (layer, head) pairs."""
        return [(h.layer, h.head) for h in self.heads]


@dataclass(frozen=True)
class HeadDrift:
    """How one head's score and system attention moved from the base to the model."""

    layer: int
    """0-based decoder layer."""
    head: int
    """Query head."""
    score: float
    """The model's score."""
    score_base: float
    """The base's score."""
    delta: float
    """``score - score_base``."""
    conflict_mass: float
    """The model's mean system-span mass on conflicts."""
    conflict_mass_base: float
    """The base's mean system-span mass on conflicts."""
    conflict_mass_delta: float
    """``conflict_mass - conflict_mass_base``."""


@dataclass(frozen=True)
class AttentionDrift:
    """The focal scores of a model against its base, head by head."""

    rule: str
    """The rule both results were scored with."""
    score_delta: Float[Tensor, "n_layers n_heads"]
    """Model score minus base score."""
    conflict_mass_delta: Float[Tensor, "n_layers n_heads"]
    """Change of the mean system-span mass on conflicting prompts (model minus base)."""
    normal_mass_delta: Float[Tensor, "n_layers n_heads"]
    """Change of the mean system-span mass on normal prompts."""
    moved_most: tuple[HeadDrift, ...]
    """The heads whose score moved most (largest ``|delta|`` first)."""
    shared_focal: tuple[tuple[int, int], ...]
    """Heads focal in both the base and the model."""


class _Turn(Protocol):
    @property
    def prompt(self) -> str: ...

    @property
    def system(self) -> str | None: ...


def pairs_from_prompts(
    normal: Sequence[_Turn], conflict: Sequence[_Turn], where: str = "prompts"
) -> list[Pair]:
    """Pair row i of ``normal`` with row i of ``conflict``; both must share the system message.

    Raises :class:`InputError` naming the first row that does not pair.
    """
    if len(normal) != len(conflict):
        raise InputError(
            f"{where}: {len(normal)} normal and {len(conflict)} conflicting prompts; "
            "row i of each must form a pair"
        )
    pairs = []
    for i, (n, c) in enumerate(zip(normal, conflict, strict=True), 1):
        if not n.system or n.system != c.system:
            raise InputError(
                f"{where}: row {i}: the normal and conflicting prompts need the same "
                f"non-empty system message, got {n.system!r} and {c.system!r}"
            )
        pairs.append(Pair(n.system, n.prompt, c.prompt))
    return pairs


# ----- capture -----------------------------------------------------------------------------


def _root(model: nn.Module) -> Any:
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


@contextmanager
def eager_attention(model: nn.Module) -> Iterator[None]:
    """Run the block with eager attention (which returns probabilities); restore afterwards.

    Raises :class:`InputError` when the model cannot switch its attention implementation.
    """
    root = _root(model)
    before = root.config._attn_implementation
    if before == "eager":
        yield
        return
    can_set = getattr(root, "_can_set_attn_implementation", None)
    if not callable(can_set) or not can_set():
        raise InputError(
            f"this {type(root).__name__} cannot switch to eager attention, which the focal "
            "probe needs for attention probabilities; load it with attn_implementation='eager'"
        )
    root.set_attn_implementation("eager")
    try:
        yield
    finally:
        root.set_attn_implementation(before)


@contextmanager
def capture_last_rows(
    sites: Sequence[AttentionSite],
) -> Iterator[list[list[Float[Tensor, "batch n_heads n_keys"]]]]:
    """Record, per layer and forward, the last query row of the attention probabilities.

    Yields one list per site that fills with a ``[batch, n_heads, n_keys]`` float32 copy per
    forward (query heads, so grouped key/value heads are already expanded). Needs eager
    attention (:func:`eager_attention`); the hooks are removed when the block exits, also on
    an exception.
    """
    store: list[list[Tensor]] = [[] for _ in sites]

    def make_hook(i: int) -> Callable[[nn.Module, Any, Any], None]:
        def hook(_module: nn.Module, _args: Any, output: Any) -> None:
            weights = output[1] if isinstance(output, tuple) and len(output) > 1 else None
            if not isinstance(weights, Tensor) or weights.ndim != 4:
                raise RuntimeFailure(
                    f"attention of layer {sites[i].layer} ({sites[i].name}) returned no "
                    "attention probabilities; eager attention is not in effect"
                )
            store[i].append(weights[:, :, -1, :].to(torch.float32, copy=True))

        return hook

    handles = []
    try:
        for i, site in enumerate(sites):
            handles.append(site.module.register_forward_hook(make_hook(i)))
        yield store
    finally:
        for handle in handles:
            handle.remove()


@dataclass(frozen=True)
class SystemPrompts:
    """Formatted prompts with a system message and where that message sits in tokens."""

    texts: tuple[str, ...]
    """The rendered prompts (ending with the assistant header)."""
    spans: tuple[tuple[int, int], ...]
    """System span [start, end) of each prompt in its own (unpadded) token positions."""
    lengths: tuple[int, ...]
    """Token count of each prompt as :func:`surgeon.tokens.encode` tokenises it."""


def system_prompts(
    tokenizer: PreTrainedTokenizerBase, systems: Sequence[str], users: Sequence[str]
) -> SystemPrompts:
    """Render each (system, user) pair and locate its system span in tokens.

    Raises :class:`InputError` for a missing system message or a chat template that does not
    render it verbatim.
    """
    formatted = []
    for i, (system, user) in enumerate(zip(systems, users, strict=True)):
        if not system or not system.strip():
            raise InputError(f"prompt {i}: the focal probe needs a system message")
        formatted.append(format_prompt(tokenizer, user, system))
    located = system_token_spans(tokenizer, formatted)
    texts, spans, lengths = [], [], []
    for i, (fp, (span, n_tokens)) in enumerate(zip(formatted, located, strict=True)):
        if span is None:
            raise InputError(
                f"prompt {i}: the chat template does not render the system message verbatim, "
                f"so its tokens cannot be located: {systems[i][:60]!r}"
            )
        texts.append(fp.text)
        spans.append(span)
        lengths.append(n_tokens)
    return SystemPrompts(tuple(texts), tuple(spans), tuple(lengths))


def spans_in_batch(
    prompts: SystemPrompts, indices: Sequence[int], attention_mask: Tensor
) -> list[tuple[int, int]]:
    """The system spans of ``prompts[indices]`` in their left-padded batch.

    :func:`surgeon.tokens.encode` pads on the left and cuts over-long prompts from the left,
    so a span moves right by the padding and left by the cut (and is clipped to the real
    tokens). Raises :class:`InputError` when a cut removed the whole system message.
    """
    width = attention_mask.shape[1]
    out = []
    for i, n_real in zip(indices, attention_mask.sum(-1).tolist(), strict=True):
        length = prompts.lengths[i]
        if n_real > length:
            raise RuntimeFailure(
                f"prompt {i}: batched encoding has {n_real} tokens, the span was located in "
                f"{length}; the tokenizer adds tokens inconsistently"
            )
        shift = width - length
        start = max(prompts.spans[i][0] + shift, width - n_real)
        end = prompts.spans[i][1] + shift
        if end <= start:
            raise InputError(
                f"prompt {i}: the system message was cut off: the prompt has {length} "
                f"tokens, more than the {n_real} the model's context keeps"
            )
        out.append((start, end))
    return out


@torch.no_grad()
def capture_attention(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    systems: Sequence[str],
    users: Sequence[str],
    *,
    keep_rows: bool = False,
    batch_size: int = 16,
    desc: str = "attention",
) -> AttentionCapture:
    """Last-token attention to the system span for each (system, user) prompt.

    The model is switched to eager attention for the call and back afterwards; its weights
    are untouched. Prompts are encoded by :func:`surgeon.tokens.encode` (left padding,
    position ids from the first real token, over-long prompts cut from the left).
    """
    if not users:
        raise ValueError("capture_attention needs at least one prompt")
    prompts = system_prompts(tokenizer, systems, users)
    sites = find_attention(model).sites
    device = model_device(model)
    extra = forward_kwargs(model)
    masses: list[Tensor] = []
    rows: list[Tensor] = []
    starts = range(0, len(prompts.texts), batch_size)
    was_training = model.training
    model.eval()
    try:
        with eager_attention(model), capture_last_rows(sites) as store:
            for start in progress(starts, desc=desc):
                indices = range(start, min(start + batch_size, len(prompts.texts)))
                enc = encode(tokenizer, [prompts.texts[i] for i in indices], device)
                model(**enc, use_cache=False, **extra)
                last = torch.stack([per_layer.pop() for per_layer in store], dim=1).cpu()
                mask = enc["attention_mask"].cpu()
                width = mask.shape[1]
                spans = spans_in_batch(prompts, indices, mask)
                for j, ((s, e), n_real) in enumerate(
                    zip(spans, mask.sum(-1).tolist(), strict=True)
                ):
                    masses.append(last[j, :, :, s:e].sum(-1))
                    if keep_rows:
                        rows.append(last[j, :, :, width - n_real :].clone())
    finally:
        model.train(was_training)
    return AttentionCapture(
        mass=torch.stack(masses),
        rows=tuple(rows) if keep_rows else None,
        spans=prompts.spans,
        lengths=prompts.lengths,
    )


# ----- scoring (pure) ----------------------------------------------------------------------


def score_mass(
    normal: Float[Tensor, "n_normal n_layers n_heads"],
    conflict: Float[Tensor, "n_conflict n_layers n_heads"],
    eps: float = 1e-6,
) -> Float[Tensor, "n_layers n_heads"]:
    """``|mean_n - mean_c| / (std_n + std_c + eps)`` per head (population std)."""
    if normal.shape[0] < 1 or conflict.shape[0] < 1:
        raise ValueError("score_mass needs at least one normal and one conflicting prompt")
    mu_n, mu_c = normal.mean(0), conflict.mean(0)
    sd_n, sd_c = normal.std(0, correction=0), conflict.std(0, correction=0)
    return (mu_n - mu_c).abs() / (sd_n + sd_c + eps)


def score_rows(
    normal: Sequence[Float[Tensor, "n_layers n_heads n_keys"]],
    conflict: Sequence[Float[Tensor, "n_layers n_heads n_keys"]],
    eps: float = 1e-6,
) -> Float[Tensor, "n_layers n_heads"]:
    """FocalLoRA's ``score_heads``: 0.4 Frobenius + 0.3 mean shift + 0.3 KL, per head.

    Pair i is ``normal[i]`` with ``conflict[i]``. Rows are cut to the shortest of all of them
    (positions from the first token); see the module docstring for what is kept as released.
    """
    if len(normal) != len(conflict) or not normal:
        raise ValueError(
            f"score_rows needs paired rows, got {len(normal)} normal and {len(conflict)} conflict"
        )
    width = min(r.shape[-1] for r in (*normal, *conflict))
    n = torch.stack([r[..., :width] for r in normal]).double()  # [N, L, H, K]
    c = torch.stack([r[..., :width] for r in conflict]).double()
    frob = (n - c).pow(2).sum(dim=(0, 3)).sqrt()
    mean_shift = (n.mean(-1) - c.mean(-1)).abs().mean(0)

    def softmax(x: Tensor) -> Tensor:
        e = (x - x.amax(-1, keepdim=True)).exp()
        return e / e.sum(-1, keepdim=True).clamp_min(eps)

    p, q = softmax(n), softmax(c)
    kl = (p * ((p + eps).log() - (q + eps).log())).sum(dim=(0, 3)) / p.shape[0]
    return (0.4 * frob + 0.3 * mean_shift + 0.3 * kl).float()


def rank_heads(scores: Float[Tensor, "n_layers n_heads"], k: int) -> list[FocalHead]:
    """The ``k`` highest-scoring heads; ties go to the lower layer, then the lower head."""
    n_layers, n_heads = scores.shape
    flat = [
        FocalHead(layer, head, float(scores[layer, head]))
        for layer in range(n_layers)
        for head in range(n_heads)
    ]
    flat.sort(key=lambda h: (-h.score, h.layer, h.head))
    return flat[:k]


def focal_scores(
    normal: AttentionCapture, conflict: AttentionCapture, config: FocalConfig | None = None
) -> FocalResult:
    """Score and select focal heads from two captures (pure; row i of each is a pair)."""
    config = config or FocalConfig()
    if normal.mass.shape != conflict.mass.shape:
        raise ValueError(
            f"normal and conflict captures differ in shape: {tuple(normal.mass.shape)} vs "
            f"{tuple(conflict.mass.shape)}; pass paired prompts"
        )
    if config.rule == "mass":
        scores = score_mass(normal.mass, conflict.mass, config.eps)
    elif config.rule == "conflict_mass":
        scores = conflict.mass.mean(0)
    else:
        if normal.rows is None or conflict.rows is None:
            raise ValueError("the row rule needs captures taken with keep_rows=True")
        scores = score_rows(normal.rows, conflict.rows, config.eps)
    if not torch.isfinite(scores).all():
        layer, head = (~torch.isfinite(scores)).nonzero()[0].tolist()
        raise RuntimeFailure(f"focal score of layer {layer} head {head} is not finite")
    heads = tuple(rank_heads(scores, config.k_of(scores.numel())))

    def mean_len(values: Sequence[int]) -> float:
        return float(sum(values) / len(values))

    return FocalResult(
        rule=config.rule,
        scores=scores,
        mass_normal=normal.mass.mean(0),
        mass_conflict=conflict.mass.mean(0),
        mass_normal_std=normal.mass.std(0, correction=0),
        mass_conflict_std=conflict.mass.std(0, correction=0),
        heads=heads,
        layers=tuple(sorted({h.layer for h in heads})),
        n_pairs=int(normal.mass.shape[0]),
        system_tokens=mean_len([e - s for s, e in normal.spans]),
        prompt_tokens_normal=mean_len(normal.lengths),
        prompt_tokens_conflict=mean_len(conflict.lengths),
    )


def capture_pairs(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    pairs: Sequence[ConflictPair],
    *,
    keep_rows: bool = False,
    batch_size: int = 16,
) -> tuple[AttentionCapture, AttentionCapture]:
    """Captures of the normal and the conflicting prompts of ``pairs``, in pair order."""
    if not pairs:
        raise InputError("the focal probe needs at least one normal/conflict pair")
    systems = [p.system for p in pairs]
    normal = capture_attention(
        model,
        tokenizer,
        systems,
        [p.prompt for p in pairs],
        keep_rows=keep_rows,
        batch_size=batch_size,
        desc="attention (normal)",
    )
    conflict = capture_attention(
        model,
        tokenizer,
        systems,
        [p.conflict for p in pairs],
        keep_rows=keep_rows,
        batch_size=batch_size,
        desc="attention (conflict)",
    )
    return normal, conflict


def focal_probe(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    pairs: Sequence[ConflictPair],
    config: FocalConfig | None = None,
) -> FocalResult:
    """Score every (layer, query head) on ``pairs`` and select the focal heads.

    Leaves the model's weights and attention implementation as they were.
    """
    config = config or FocalConfig()
    normal, conflict = capture_pairs(
        model, tokenizer, pairs, keep_rows=config.rule == "row", batch_size=config.batch_size
    )
    return focal_scores(normal, conflict, config)


# ----- drift (pure) ------------------------------------------------------------------------


def attention_drift(base: FocalResult, model: FocalResult, top: int = 10) -> AttentionDrift:
    """Per-head change of the focal scores and system attention from ``base`` to ``model``."""
    if base.rule != model.rule:
        raise ValueError(f"cannot compare a {base.rule!r} result with a {model.rule!r} result")
    if base.scores.shape != model.scores.shape:
        raise ValueError(
            f"base and model have different head grids: {tuple(base.scores.shape)} vs "
            f"{tuple(model.scores.shape)}"
        )
    if top < 1:
        raise ValueError(f"top must be >= 1, got {top}")
    delta = model.scores - base.scores
    conflict_delta = model.mass_conflict - base.mass_conflict
    n_layers, n_heads = delta.shape
    drifts = [
        HeadDrift(
            layer=layer,
            head=head,
            score=float(model.scores[layer, head]),
            score_base=float(base.scores[layer, head]),
            delta=float(delta[layer, head]),
            conflict_mass=float(model.mass_conflict[layer, head]),
            conflict_mass_base=float(base.mass_conflict[layer, head]),
            conflict_mass_delta=float(conflict_delta[layer, head]),
        )
        for layer in range(n_layers)
        for head in range(n_heads)
    ]
    drifts.sort(key=lambda d: (-abs(d.delta), -abs(d.conflict_mass_delta), d.layer, d.head))
    base_set = set(base.head_set())
    return AttentionDrift(
        rule=model.rule,
        score_delta=delta,
        conflict_mass_delta=conflict_delta,
        normal_mass_delta=model.mass_normal - base.mass_normal,
        moved_most=tuple(drifts[:top]),
        shared_focal=tuple(h for h in model.head_set() if h in base_set),
    )
