"""Task metrics for rollback: higher is better, measured on the working model.

* ``exact`` / ``contains``: greedy answers to a task file's prompts against their references.
* ``likelihood``: ``exp(-cross-entropy)`` of the fine-tuned model's own greedy answers (no
  labels needed); 1.0 would mean the model is certain of every token F produced.

The same own-answer cross-entropy gives the task gradient ``g_t`` of the task-aware selection.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from transformers import PreTrainedTokenizerBase

from surgeon.errors import InputError
from surgeon.generation import generate, model_device, prompt_limit
from surgeon.tokens import encode, pad_token_id, position_ids_for


@dataclass(frozen=True)
class AnswerSet:
    """Prompts with a model's own greedy answers, as token ids."""

    prompt_ids: tuple[tuple[int, ...], ...]
    """Token ids of each formatted prompt (no padding)."""
    answer_ids: tuple[tuple[int, ...], ...]
    """Token ids of each greedy answer, up to and including the first end-of-sequence token."""

    def head(self, k: int) -> AnswerSet:
        """The same prompts with each answer cut to its first ``k`` tokens."""
        return AnswerSet(self.prompt_ids, tuple(a[:k] for a in self.answer_ids))


@torch.no_grad()
def own_answers(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    max_new_tokens: int,
    batch_size: int,
) -> AnswerSet:
    """Greedy answers of ``model`` to formatted prompts, kept as token ids."""
    device = model_device(model)
    limit = prompt_limit(model, tokenizer, max_new_tokens)
    eos = tokenizer.eos_token_id
    prompts: list[tuple[int, ...]] = []
    answers: list[tuple[int, ...]] = []
    was_training = model.training
    model.eval()
    try:
        for i in range(0, len(texts), batch_size):
            enc = encode(tokenizer, list(texts[i : i + batch_size]), device, max_length=limit)
            gen = model.generate(  # type: ignore[operator]
                **enc,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=pad_token_id(tokenizer),
                eos_token_id=eos,
            )
            width = enc["input_ids"].shape[1]
            for row, mask, out in zip(enc["input_ids"], enc["attention_mask"], gen, strict=True):
                prompts.append(tuple(int(t) for t in row[mask.bool()]))
                new = [int(t) for t in out[width:]]
                if eos is not None and eos in new:
                    new = new[: new.index(eos) + 1]
                answers.append(tuple(new) or ((eos,) if eos is not None else ()))
    finally:
        model.train(was_training)
    return AnswerSet(tuple(prompts), tuple(answers))


def _collate(
    answers: AnswerSet, rows: range, pad_id: int, device: torch.device
) -> tuple[Tensor, Tensor, Tensor]:
    """Left-padded ``input_ids``, ``attention_mask`` and a mask of answer-token targets."""
    seqs = [answers.prompt_ids[i] + answers.answer_ids[i] for i in rows]
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    att = torch.zeros((len(seqs), width), dtype=torch.long)
    target = torch.zeros((len(seqs), width), dtype=torch.bool)
    for r, i in enumerate(rows):
        seq = seqs[r]
        ids[r, width - len(seq) :] = torch.tensor(seq)
        att[r, width - len(seq) :] = 1
        target[r, width - len(answers.answer_ids[i]) :] = True
    return ids.to(device), att.to(device), target.to(device)


def answer_cross_entropy(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    answers: AnswerSet,
    batch_size: int,
    *,
    backward: bool = False,
    first_token_share: float = 0.0,
    weight: float = 1.0,
) -> float:
    """Token-mean cross-entropy of the answers given their prompts.

    ``first_token_share``: that share of the loss is the answer-mean cross-entropy of the first
    answer token alone, the rest the token mean (0: the plain token mean). Under teacher
    forcing the tokens after the first are mostly easy continuations, so the token mean can be
    small while the first token, which decides whether the model answers or refuses, is wrong.
    With ``backward``, the gradient of ``weight`` times the loss is accumulated into ``.grad``
    (batch by batch); the returned value is the unweighted loss.
    """
    device = model_device(model)
    pad = pad_token_id(tokenizer)
    n_tokens = sum(len(a) for a in answers.answer_ids)
    n_answers = len(answers.answer_ids)
    if n_tokens == 0:
        raise ValueError("no answer tokens to score")
    total = 0.0
    for rows in answer_chunks(answers, batch_size, vocab_size(model)):
        with torch.set_grad_enabled(backward):
            nll, tgt, first = _token_nll(model, answers, rows, pad, device)
            loss = (1.0 - first_token_share) * (nll * tgt).sum() / n_tokens
            if first_token_share > 0:
                loss = loss + first_token_share * (nll * first).sum() / n_answers
            if backward:
                (loss * weight if weight != 1.0 else loss).backward()
        total += float(loss.detach())
    return total


def row_cross_entropy(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    answers: AnswerSet,
    rows: range,
    first_token_share: float = 0.0,
) -> Tensor:
    """Per-answer loss of the answers in ``rows``: ``1 - first_token_share`` of the answer's
    token-mean cross-entropy plus ``first_token_share`` of its first token's (graph kept)."""
    nll, tgt, first = _token_nll(model, answers, rows, pad_token_id(tokenizer), model_device(model))
    mean = (nll * tgt).sum(-1) / tgt.sum(-1).clamp(min=1)
    return (1.0 - first_token_share) * mean + first_token_share * (nll * first).sum(-1)


def row_chunks(n: int, size: int) -> list[range]:
    """Consecutive row ranges of at most ``size`` rows covering ``0..n-1``."""
    return [range(s, min(s + size, n)) for s in range(0, n, size)]


LOGITS_BUDGET = 1 << 25
"""Most bytes of fp32 answer logits one teacher-forced pass may hold (32 MiB): the log-softmax
and its gradient each take as much again, so on a 49k vocabulary a batch of 16 answers of 48
tokens (460 MiB in all) is split into passes of 3 rows."""


TOKENS_BUDGET = 768
"""Most tokens (rows times the longest prompt plus answer) one teacher-forced pass may hold:
its activations, kept for the backward pass, grow with them (on the real organism a batch of
16 prompts with 48-token answers held ~0.35 GB during a rollback step)."""


def answer_chunks(answers: AnswerSet, size: int, vocab: int) -> list[range]:
    """Consecutive row ranges of at most ``size`` rows whose answer logits (``rows * (longest
    answer + 1) * vocab`` fp32 values) fit :data:`LOGITS_BUDGET` and whose padded tokens fit
    :data:`TOKENS_BUDGET`; always at least one row."""
    out: list[range] = []
    start, longest, widest = 0, 0, 0
    for i, answer in enumerate(answers.answer_ids):
        width = max(longest, len(answer) + 1)
        seq = max(widest, len(answers.prompt_ids[i]) + len(answer))
        rows = i - start + 1
        over = rows * width * vocab * 4 > LOGITS_BUDGET or rows * seq > TOKENS_BUDGET
        if i > start and (rows > size or over):
            out.append(range(start, i))
            start, width = i, len(answer) + 1
            seq = len(answers.prompt_ids[i]) + len(answer)
        longest, widest = width, seq
    if start < len(answers.answer_ids):
        out.append(range(start, len(answers.answer_ids)))
    return out


def vocab_size(model: nn.Module) -> int:
    """Rows of the model's output projection (its logits' width)."""
    head = model.get_output_embeddings()  # type: ignore[operator]
    if head is not None and getattr(head, "weight", None) is not None:
        return int(head.weight.shape[0])
    return int(model.config.vocab_size)  # type: ignore[union-attr]


def _token_nll(
    model: nn.Module, answers: AnswerSet, rows: range, pad_id: int, device: torch.device
) -> tuple[Tensor, Tensor, Tensor]:
    """One teacher-forced forward over the answers in ``rows``: each position's next-token
    negative log-likelihood, the mask of answer targets and the mask of each row's first
    answer token (graph kept when grad is enabled)."""
    ids, att, target = _collate(answers, rows, pad_id, device)
    # answers are right-aligned (left padding), so only the last ``keep`` positions predict an
    # answer token: the vocabulary projection and its log-softmax run there alone (on a 49k
    # vocabulary with ~40-token answers after ~60-token prompts, 2-3x less memory and time)
    keep = min(ids.shape[1], max(len(answers.answer_ids[i]) for i in rows) + 1)
    logits = model(
        input_ids=ids,
        attention_mask=att,
        position_ids=position_ids_for(att),
        use_cache=False,
        logits_to_keep=keep,
    ).logits
    start = ids.shape[1] - keep
    logp = torch.log_softmax(logits[:, -keep:-1].float(), dim=-1)
    nll = -logp.gather(-1, ids[:, start + 1 :].unsqueeze(-1)).squeeze(-1)
    tgt = target[:, start + 1 :]
    return nll, tgt, tgt & ~target[:, start:-1]


def normalise(text: str) -> str:
    """Whitespace-collapsed, stripped text for exact matching."""
    return " ".join(text.split())


class TaskMetric(ABC):
    """A task score of a model, higher is better."""

    name: str

    @abstractmethod
    def measure(self, model: nn.Module) -> float:
        """The metric of ``model`` (its weights as they are now)."""


class ReferenceMetric(TaskMetric):
    """Share of greedy answers that match (``exact``) or contain (``contains``) the reference."""

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        texts: Sequence[str],
        references: Sequence[str],
        mode: str,
        max_new_tokens: int,
        batch_size: int,
    ) -> None:
        if mode not in ("exact", "contains"):
            raise ValueError(f"reference metric mode must be exact or contains; got {mode!r}")
        if len(texts) != len(references) or not texts:
            raise ValueError("a reference metric needs one reference per prompt, at least one")
        self.name = mode
        self.tokenizer = tokenizer
        self.texts = list(texts)
        self.references = [normalise(r) for r in references]
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size

    def hits(self, responses: Sequence[str]) -> list[bool]:
        """Per response: does it match its reference."""
        got = [normalise(r) for r in responses]
        if self.name == "exact":
            return [g == r for g, r in zip(got, self.references, strict=True)]
        return [r in g for g, r in zip(got, self.references, strict=True)]

    def measure(self, model: nn.Module) -> float:
        responses = generate(
            model,  # type: ignore[arg-type]
            self.tokenizer,
            self.texts,
            max_new_tokens=self.max_new_tokens,
            batch_size=self.batch_size,
            desc="task metric",
        )
        hits = self.hits(responses)
        return sum(hits) / len(hits)


class LikelihoodMetric(TaskMetric):
    """``exp(-cross-entropy)`` of fixed answers (the fine-tuned model's own) given the prompts."""

    name = "likelihood"

    def __init__(
        self, tokenizer: PreTrainedTokenizerBase, answers: AnswerSet, batch_size: int
    ) -> None:
        self.tokenizer = tokenizer
        self.answers = answers
        self.batch_size = batch_size

    @torch.no_grad()
    def measure(self, model: nn.Module) -> float:
        ce = answer_cross_entropy(model, self.tokenizer, self.answers, self.batch_size)
        return float(torch.exp(torch.tensor(-ce)))


def resolve_metric_name(requested: str, references: Sequence[str | None]) -> str:
    """``auto`` becomes ``exact`` when every prompt has a reference, else ``likelihood``."""
    have_refs = bool(references) and all(r for r in references)
    if requested == "auto":
        return "exact" if have_refs else "likelihood"
    if not have_refs:
        raise InputError(f"task metric {requested!r} needs a 'reference' for every task prompt")
    return requested
