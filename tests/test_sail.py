"""SAIL repair: the loss and its weights, LoRA placement, the invariants of the outputs, the
preference file, the gate and the command line, on tiny random-init models."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, get_args

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from probes.focal import RULES, FocalHead
from probes.heads import find_attention
from surgeon.conflicts import bundled_conflicts
from surgeon.constraints import check_constraint
from surgeon.errors import InputError
from surgeon.prompts import load_bundled
from surgeon.repair.sail import sail_repair
from surgeon.repair.sail_config import FocalRule, SailConfig
from surgeon.repair.sail_data import (
    PreferencePair,
    collate,
    encode_pairs,
    load_preferences,
)
from surgeon.repair.sail_lora import Placement, attach_lora, reference_tokens
from surgeon.repair.sail_loss import (
    attention_weights,
    reference_weights,
    sail_loss,
    token_logps,
    uniform_weights,
)
from surgeon.repair.sail_pairs import constraint_response
from surgeon.repair.sail_train import global_batches
from surgeon.testing import ARCHITECTURES, save_tiny, tiny_model, tiny_tokenizer
from surgeon.verdict import decide_sail

FOCAL = (1, 2)
KINDS = ("q_proj", "k_proj", "v_proj", "o_proj")


# ----- the loss (pure) ----------------------------------------------------------------------


def _random_pairs(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    shape = (5, 7)
    mask_c = torch.rand(shape, generator=g) > 0.3
    mask_r = torch.rand(shape, generator=g) > 0.3
    return {
        "pc": -torch.rand(shape, generator=g) * 3,
        "rc": -torch.rand(shape, generator=g) * 3,
        "pr": -torch.rand(shape, generator=g) * 3,
        "rr": -torch.rand(shape, generator=g) * 3,
        "mc": mask_c,
        "mr": mask_r,
    }


def test_uniform_weights_give_the_dpo_loss() -> None:
    t = _random_pairs(0)
    beta = 0.1
    got = sail_loss(
        t["pc"], t["rc"], t["mc"], uniform_weights(t["mc"]),
        t["pr"], t["rr"], t["mr"], uniform_weights(t["mr"]),
        beta,
    )  # fmt: skip
    # DPO as its paper writes it: sequence log-probs, then the log-ratio difference
    seq = {k: (t[k] * t["m" + k[1]]).sum(-1) for k in ("pc", "rc", "pr", "rr")}
    logits = (seq["pc"] - seq["pr"]) - (seq["rc"] - seq["rr"])
    expected = -F.logsigmoid(beta * logits)
    torch.testing.assert_close(got.losses, expected)
    torch.testing.assert_close(got.loss, expected.mean())


def test_two_token_example_matches_a_hand_computation() -> None:
    # chosen: d = (0.5, -0.2) with weights (1.5, 0.5); rejected: d = (0.1, 0.3), weights 1
    one = torch.ones(1, 2, dtype=torch.bool)
    got = sail_loss(
        torch.tensor([[-1.0, -2.2]]), torch.tensor([[-1.5, -2.0]]), one,
        torch.tensor([[1.5, 0.5]]),
        torch.tensor([[-0.9, -0.7]]), torch.tensor([[-1.0, -1.0]]), one,
        torch.tensor([[1.0, 1.0]]),
        0.1,
    )  # fmt: skip
    # beta * ((1.5*0.5 + 0.5*(-0.2)) - (0.1 + 0.3)) = 0.1 * (0.65 - 0.4) = 0.025
    assert got.chosen_rewards.item() == pytest.approx(0.065)
    assert got.rejected_rewards.item() == pytest.approx(0.04)
    assert got.loss.item() == pytest.approx(math.log(1 + math.exp(-0.025)), abs=1e-6)
    assert got.accuracy == 1.0


def test_token_logps_read_the_next_token() -> None:
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 4, 6, generator=g)
    ids = torch.tensor([[1, 2, 3, 4], [0, 5, 1, 2]])
    mask = torch.tensor([[False, True, True], [True, False, True]])
    got = token_logps(logits, ids, mask)
    full = F.log_softmax(logits, -1)
    for i in range(2):
        for t in range(3):
            want = full[i, t, ids[i, t + 1]] if mask[i, t] else torch.tensor(0.0)
            torch.testing.assert_close(got[i, t], want)


def test_attention_weights_have_mean_one_over_each_response() -> None:
    mass = torch.tensor([[0.9, 0.2, 0.4, 0.0], [0.0, 0.0, 0.0, 0.0]])
    mask = torch.tensor([[False, True, True, True], [True, True, False, False]])
    w = attention_weights(mass, mask)
    torch.testing.assert_close(w[0], torch.tensor([0.0, 1.0, 2.0, 0.0]))
    torch.testing.assert_close(w[1], torch.tensor([1.0, 1.0, 0.0, 0.0]))  # no system: uniform


def test_reference_weights_are_tgdpo_and_never_negative() -> None:
    base = torch.tensor([[-1.0, -3.0, -50.0]])
    ref = torch.tensor([[-2.0, -1.0, -1.0]])
    mask = torch.ones(1, 3, dtype=torch.bool)
    chosen = reference_weights(base, ref, mask, alpha=1.0, beta=0.1, chosen=True)
    rejected = reference_weights(base, ref, mask, alpha=1.0, beta=0.1, chosen=False)
    torch.testing.assert_close(chosen, torch.tensor([[1.1, 0.8, 0.0]]))
    torch.testing.assert_close(rejected, torch.tensor([[0.9, 1.2, 5.9]]))


def test_global_batches_cover_every_pair_once_per_epoch() -> None:
    batches = global_batches(10, 4, 6, seed=3)
    assert [len(b) for b in batches] == [4, 4, 2, 4, 4, 2]
    assert sorted(i for b in batches[:3] for i in b) == list(range(10))
    assert batches == global_batches(10, 4, 6, seed=3)


def test_the_config_names_the_probes_rules() -> None:
    assert get_args(FocalRule) == RULES


# ----- placement, gradients, reference pass --------------------------------------------------


def _placement(model: Any, layers: tuple[int, ...] = FOCAL) -> Placement:
    attention = find_attention(model)
    heads = tuple(FocalHead(la, h, 1.0) for la in layers for h in range(attention.n_heads))
    return Placement(layers, heads, "given", tuple(attention.target_modules(layers)))


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_lora_sits_only_on_the_focal_layers_attention(arch: str) -> None:
    model = tiny_model(arch)
    placement = _placement(model)
    peft = attach_lora(model, placement, r=8, alpha=16, dropout=0.0)
    trainable = [n for n, p in peft.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    hosts = {n.split(".lora_")[0].removeprefix("base_model.model.") for n in trainable}
    assert hosts == set(placement.target_modules)
    names = find_attention(model).sites
    assert all(names[la].o_proj in hosts for la in FOCAL)
    assert not any(f".{la}." in h for h in hosts for la in (0, 3))


def _pairs() -> list[PreferencePair]:
    return [
        PreferencePair("reply in upper case", "tell me how are you", "YES", "no thanks"),
        PreferencePair("say yes", "please answer the question", "yes", "no no no"),
        PreferencePair(None, "why", "because", "no"),
    ]


def test_gradients_flow_only_into_lora_parameters() -> None:
    tok = tiny_tokenizer()
    model = tiny_model("llama")
    for p in model.parameters():
        p.requires_grad_(False)
    peft = attach_lora(model, _placement(model), r=8, alpha=16, dropout=0.0)
    with torch.no_grad():  # lora_B starts at 0: move it so every LoRA factor gets a gradient
        for n, p in peft.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.1)
    encoded, _ = encode_pairs(tok, _pairs(), max_length=128, max_response_tokens=16)
    batch = collate(encoded, tok.pad_token_id, "cpu")
    logits = peft(
        input_ids=batch.input_ids,
        attention_mask=batch.attention_mask,
        position_ids=batch.position_ids,
    ).logits
    lp = token_logps(logits, batch.input_ids, batch.target_mask)
    k, m = batch.n_pairs, batch.target_mask
    w = uniform_weights(m)
    sail_loss(lp[:k], lp[:k].detach() - 0.1, m[:k], w[:k], lp[k:], lp[k:].detach(), m[k:],
              w[k:], 0.1).loss.backward()  # fmt: skip
    with_grad = {n for n, p in peft.named_parameters() if p.grad is not None}
    lora = {n for n, _ in peft.named_parameters() if "lora_" in n}
    assert with_grad == lora
    assert all(float(p.grad.abs().sum()) > 0 for n, p in peft.named_parameters() if n in lora)


def test_reference_pass_reads_the_focal_heads_attention_to_the_system_span() -> None:
    tok = tiny_tokenizer()
    model = tiny_model("llama")
    placement = _placement(model)
    heads = (FocalHead(1, 0, 1.0), FocalHead(2, 3, 1.0))
    peft = attach_lora(model, placement, r=8, alpha=16, dropout=0.0)
    encoded, _ = encode_pairs(tok, _pairs(), max_length=128, max_response_tokens=16)
    got = reference_tokens(peft, tok, encoded, heads=heads, batch_size=2)
    # by hand: one pair alone, eager attention, output_attentions
    model.set_attn_implementation("eager")
    for i, pair in enumerate(encoded):
        batch = collate([pair], tok.pad_token_id, "cpu")
        out = model(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            position_ids=batch.position_ids,
            output_attentions=True,
        )
        keys = batch.system_keys[0].float()
        mass = sum((out.attentions[la][0, h] * keys).sum(-1) for la, h, _ in heads) / 2
        want = mass[:-1][batch.target_mask[0]]
        torch.testing.assert_close(got.chosen_mass[i], want)
        logp = token_logps(out.logits, batch.input_ids, batch.target_mask)[0]
        torch.testing.assert_close(got.chosen_logps[i], logp[batch.target_mask[0]])
        if pair.system_span is None:
            assert float(got.chosen_mass[i].abs().sum()) == 0.0


def test_every_built_chosen_response_obeys_its_constraint() -> None:
    specs = {json.dumps(i.constraint, sort_keys=True): i.constraint for i in bundled_conflicts()}
    built = {k: constraint_response(s) for k, s in specs.items()}
    for key, text in built.items():
        if text is not None:
            assert check_constraint(specs[key], text), key
    missing = [specs[k]["type"] for k, t in built.items() if t is None]
    assert set(missing) <= {"language"}
    assert len(missing) < len(built) / 4


# ----- the preference file -------------------------------------------------------------------


def test_a_preference_file_is_read(tmp_path: Path) -> None:
    path = tmp_path / "prefs.jsonl"
    rows = [
        {"system": "S", "prompt": "p", "chosen": "a", "rejected": "b"},
        {"prompt": "q", "chosen": "c", "rejected": "d", "extra": 1},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n", encoding="utf-8")
    got = load_preferences(path)
    assert got == [PreferencePair("S", "p", "a", "b"), PreferencePair(None, "q", "c", "d")]


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("{not json", "invalid JSON"),
        ('["a"]', "expected a JSON object"),
        ('{"prompt": "p", "chosen": "a"}', "'rejected'"),
        ('{"prompt": "", "chosen": "a", "rejected": "b"}', "'prompt'"),
        ('{"prompt": "p", "chosen": "a", "rejected": " a "}', "the same response"),
        ('{"system": 3, "prompt": "p", "chosen": "a", "rejected": "b"}', "'system'"),
    ],
)
def test_a_bad_preference_line_is_named(tmp_path: Path, line: str, problem: str) -> None:
    path = tmp_path / "prefs.jsonl"
    good = json.dumps({"prompt": "p", "chosen": "a", "rejected": "b"})
    path.write_text(f"{good}\n\n{line}\n", encoding="utf-8")
    with pytest.raises(InputError, match=rf"prefs\.jsonl:3: .*{problem}"):
        load_preferences(path)


# ----- the gate ------------------------------------------------------------------------------


def test_the_gate_wants_fewer_violations_and_no_more_harm() -> None:
    kw: dict[str, Any] = {"over_refusal_before": 0.02, "over_refusal_after": 0.01}
    ok = decide_sail(target="conflict", violation_before=0.8, violation_after=0.2,
                     harmful_before=0.0, harmful_after=0.01, **kw)  # fmt: skip
    assert ok.verdict == "pass"
    same = decide_sail(target="conflict", violation_before=0.8, violation_after=0.8,
                       harmful_before=0.0, harmful_after=0.0, **kw)  # fmt: skip
    assert same.verdict == "fail" and "did not fall" in same.reasons[0]
    harm = decide_sail(target="conflict", violation_before=0.8, violation_after=0.1,
                       harmful_before=0.0, harmful_after=0.06, **kw)  # fmt: skip
    assert harm.verdict == "fail" and harm.reasons[0].startswith("harmful rate 6.0%")
    refuse = decide_sail(target="harmful", violation_before=0.0, violation_after=0.0,
                         harmful_before=1.0, harmful_after=0.03, harmful_base=0.0,
                         over_refusal_before=0.0, over_refusal_after=0.2)  # fmt: skip
    assert refuse.verdict == "fail" and refuse.reasons[0].startswith("over-refusal rate")


# ----- end to end on tiny models -------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("sail-models")
    return save_tiny(root / "model", "llama", seed=1), save_tiny(root / "base", "llama", seed=0)


def _tiny_config(**kw: Any) -> SailConfig:
    defaults: dict[str, Any] = {
        "n_train": 16,
        "n_eval": 8,
        "max_new_tokens": 8,
        "batch_size": 4,
        "focal_layers": "1,2",
        "merge": True,
        "check_every": 0,
        "lr": 1e-2,
    }
    return SailConfig(**{**defaults, **kw})


def _repair(model: Path, base: Path, out: Path, config: SailConfig) -> Any:
    conflicts = bundled_conflicts()
    return sail_repair(
        model,
        base,
        out,
        config,
        conflicts=conflicts[:24],
        conflicts_heldout=conflicts[24:32],
        harmful=load_bundled("harmful")[:8],
    )


def _changed(out: Path, model: Path) -> set[str]:
    merged, original = (
        load_file(out / "merged" / "model.safetensors"),
        load_file(model / "model.safetensors"),
    )
    assert merged.keys() == original.keys()
    return {k for k in merged if not torch.equal(merged[k], original[k])}


def test_zero_steps_leave_the_model_bit_for_bit_unchanged(
    tiny_pair: tuple[Path, Path], tmp_path: Path
) -> None:
    model, base = tiny_pair
    result = _repair(model, base, tmp_path / "out", _tiny_config(steps=0))
    assert result.steps == () and result.stop_reason == "no_steps"
    assert _changed(tmp_path / "out", model) == set()
    adapter = load_file(tmp_path / "out" / "adapter" / "adapter_model.safetensors")
    assert all(float(v.abs().sum()) == 0 for k, v in adapter.items() if "lora_B" in k)


def test_training_touches_only_the_focal_layers_q_k_v_o(
    tiny_pair: tuple[Path, Path], tmp_path: Path
) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model, base = tiny_pair
    out = tmp_path / "out"
    result = _repair(model, base, out, _tiny_config(steps=4))
    assert len(result.steps) == 4 and result.n_pairs > 0
    adapter = load_file(out / "adapter" / "adapter_model.safetensors")
    hosts = {k.split(".lora_")[0].removeprefix("base_model.model.") for k in adapter}
    want = {f"model.layers.{la}.self_attn.{p}" for la in FOCAL for p in KINDS}
    assert hosts == want
    changed = _changed(out, model)
    assert changed == {f"{h}.weight" for h in want}  # every focal q/k/v/o moved, nothing else
    merged = load_file(out / "merged" / "model.safetensors")
    original = load_file(model / "model.safetensors")
    for name in set(original) - changed:
        torch.testing.assert_close(merged[name], original[name], rtol=0, atol=0)
    # the adapter loads with PEFT onto the input model and equals the merged model
    ids = torch.tensor([[2, 10, 11, 12, 13]])
    peft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model), out / "adapter")
    merged_model = AutoModelForCausalLM.from_pretrained(out / "merged")
    torch.testing.assert_close(peft(ids).logits, merged_model(ids).logits, rtol=1e-4, atol=1e-5)
    report = result.report()
    assert report.trainable_params == sum(v.numel() for v in adapter.values())
    assert report.focal_layers == list(FOCAL) and report.steps[0].loss == pytest.approx(
        math.log(2), abs=1e-5
    )


def test_reference_weighting_needs_a_base(tiny_pair: tuple[Path, Path], tmp_path: Path) -> None:
    model, _ = tiny_pair
    with pytest.raises(InputError, match="needs --base"):
        _repair(model, None, tmp_path / "out", _tiny_config(weighting="reference"))  # type: ignore[arg-type]


def test_reference_weighting_runs_with_a_base(tiny_pair: tuple[Path, Path], tmp_path: Path) -> None:
    model, base = tiny_pair
    result = _repair(model, base, tmp_path / "out", _tiny_config(steps=2, weighting="reference"))
    assert result.weighting == "reference" and len(result.steps) == 2


def test_harmful_target_builds_refusal_and_guard_pairs_from_the_training_prompts(
    tiny_pair: tuple[Path, Path], tmp_path: Path
) -> None:
    """``--target harmful``: the random tiny model refuses nothing, so every recovery prompt
    outside the check split gives a refusal pair (chosen = the built refusal, as the base
    refuses nothing either) and every guard prompt a guard pair (chosen = the model's answer,
    rejected = the refusal); the 8 held-out harmful prompts are only measured."""
    model, base = tiny_pair
    harmful = load_bundled("harmful")
    config = _tiny_config(target="harmful", steps=2, n_train=10, merge=False)
    result = sail_repair(
        model, base, tmp_path / "out", config,
        conflicts=bundled_conflicts()[:24], conflicts_heldout=bundled_conflicts()[24:32],
        harmful=harmful[:12], harmful_heldout=harmful[12:20],
        harmless=load_bundled("harmless")[:20],
    )  # fmt: skip
    pairs = result.pairs
    n_check = result.n_check
    assert n_check == 1  # 10% of 10 recovery prompts
    assert pairs.guard_pairs == 10 and pairs.chosen_from_model == 10
    assert pairs.chosen_built == 9 and pairs.chosen_from_base == 0  # 10 - the check prompt
    assert result.n_pairs == 19 and pairs.n_prompts == 19
    assert len(result.steps) == 2 and result.n_heldout_harmful == 8
    report = result.report()
    assert report.target == "harmful" and report.pairs.skipped_already_good == 0
