"""Every bad input, through the command line: the exit code, one line naming the culprit, no
traceback, and the inputs left byte for byte as they were.

One parametrised test over :data:`CASES`. A case is one line: an id, the command, a builder
that damages fresh copies of tiny models under the case's own directory and returns the
command's arguments, and the text the one-line message must contain (``{root}`` stands for the
case's directory). Cases with ``locked`` paths change permissions after the inputs are hashed
and run in a subprocess that permission bits bind even as root
(:func:`surgeon.testing.run_unprivileged`).
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from cli import app
from surgeon.repair.mask import MASK_FORMAT, RollbackMask, save_mask
from surgeon.testing import (
    read_safetensors_raw,
    run_unprivileged,
    save_tiny,
    save_tiny_gguf,
    tree_hash,
    write_safetensors_raw,
)

runner = CliRunner()
WEIGHT = "model.layers.1.mlp.down_proj.weight"
"""A decoder weight of the tiny Llama (shape [64, 128])."""


# ---------------------------------------------------------------------------------------------
# pristine inputs, built once and copied into each case's directory


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from peft import LoraConfig, get_peft_model

    from surgeon.loading import load_model

    root = tmp_path_factory.mktemp("pristine")
    out = {
        "model": save_tiny(root / "model", "llama", seed=0),
        "base": save_tiny(root / "base", "llama", seed=1),
        "sharded": save_tiny(root / "sharded", "llama", seed=0, max_shard_size="200KB"),
    }
    torch.manual_seed(2)
    peft_model = get_peft_model(
        load_model(out["base"]).model,
        LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
    )
    peft_model.save_pretrained(root / "adapter")
    cfg_path = root / "adapter" / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["base_model_name_or_path"] = "../base"  # relative to the adapter: the copy keeps it
    cfg_path.write_text(json.dumps(cfg))
    out["adapter"] = root / "adapter"
    mask = RollbackMask({WEIGHT: torch.tensor([0, 5, 7])}, {WEIGHT: (64, 128)}, 1000, {"base": "b"})
    (root / "masks").mkdir()
    save_mask(mask, root / "masks" / "rollback_mask.safetensors")
    out["mask"] = root / "masks" / "rollback_mask.safetensors"
    if importlib.util.find_spec("gguf") is not None:
        out["gguf"], _, _ = save_tiny_gguf(root / "ggufs" / "tiny.gguf")
    return out


@dataclass
class Inputs:
    """A case's directory and the pristine models it copies from."""

    root: Path
    pristine: dict[str, Path]

    def copy(self, name: str, as_name: str | None = None) -> Path:
        """A fresh copy of a pristine input under the case's directory."""
        src = self.pristine[name]
        dst = self.root / (as_name or src.name)
        if src.is_dir():
            shutil.copytree(src, dst)
        else:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
        return dst

    @property
    def out(self) -> str:
        """An --out that does not exist yet (it must not exist afterwards either)."""
        return str(self.root / "out")


# ---------------------------------------------------------------------------------------------
# damage: functions of an input directory (or file) that break one thing in it

Damage = Callable[[Path], object]


def nothing(_path: Path) -> None:
    """The input stays valid (the case breaks something else)."""


def header(edit: Callable[[dict], object], extra: bytes = b"") -> Damage:
    """Edit the JSON header of ``model.safetensors`` (``edit`` returns a new header or None
    after editing in place); ``extra`` bytes are appended to the data."""

    def damage(model: Path) -> None:
        path = model / "model.safetensors"
        head, data = read_safetensors_raw(path)
        new = edit(head)
        write_safetensors_raw(path, head if new is None else new, data + extra)

    return damage


def entry(tensor: str | None, key: str, value: object = None, *, drop: bool = False) -> Damage:
    """Set (or drop) one key of a tensor's header entry (``None``: the first tensor)."""

    def edit(head: dict) -> None:
        name = tensor or next(k for k in sorted(head) if k != "__metadata__")
        if drop:
            del head[name][key]
        else:
            head[name][key] = value

    return header(edit)


def json_key(file: str, key: str, value: object) -> Damage:
    """Set one key of a JSON file."""

    def damage(directory: Path) -> None:
        data = json.loads((directory / file).read_text())
        data[key] = value
        (directory / file).write_text(json.dumps(data))

    return damage


def text(file: str, content: str) -> Damage:
    """Replace a file's content."""
    return lambda directory: (directory / file).write_text(content)


def poison(name: str, value: float = float("nan")) -> Damage:
    """Write ``value`` into one entry of tensor ``name`` in the shard that holds it."""

    def damage(directory: Path) -> None:
        from surgeon.safetensors_io import tensor_index

        file = tensor_index(directory)[name].file
        tensors, meta = _read_tensors(file)
        tensors[name].view(-1)[3] = value
        save_file(tensors, str(file), metadata=meta)

    return damage


def poison_lora(directory: Path) -> None:
    """A NaN in the first ``lora_B`` tensor of an adapter."""
    file = directory / "adapter_model.safetensors"
    tensors, meta = _read_tensors(file)
    tensors[next(k for k in sorted(tensors) if "lora_B" in k)].view(-1)[0] = float("nan")
    save_file(tensors, str(file), metadata=meta)


def _read_tensors(file: Path) -> tuple[dict[str, torch.Tensor], dict[str, str] | None]:
    from safetensors import safe_open

    with safe_open(str(file), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()  # noqa: SIM118


def mask_of(indices: torch.Tensor, shape: list[int], name: str = WEIGHT) -> Damage:
    """Replace a mask file by one restoring ``indices`` of ``name`` recorded with ``shape``."""
    meta = {
        "format": MASK_FORMAT,
        "version": "1",
        "encoding": "flat_indices",
        "eligible_entries": "1000",
        "shapes": json.dumps({name: shape}),
    }
    return lambda path: save_file({name: indices}, str(path), metadata=meta)


def ints(*values: int) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.int32)


# ---------------------------------------------------------------------------------------------
# command builders: each copies the pristine inputs, damages them, returns the CLI arguments

Builder = Callable[[Inputs], list[str]]
OutPath = Callable[[Inputs], str]


def diagnose(damage: Damage, *, base: bool = False, model: str = "model") -> Builder:
    """``diagnose MODEL [--base BASE] --out OUT`` with ``damage`` done to MODEL (the tiny
    Llama, or ``model`` = ``sharded`` / ``adapter``, whose recorded base is copied too)."""

    def build(i: Inputs) -> list[str]:
        path = i.copy(model)
        if model == "adapter":
            i.copy("base")
        damage(path)
        extra = ["--base", str(i.copy("base"))] if base else []
        return ["diagnose", str(path), *extra, "--out", i.out]

    return build


def diagnose_base(damage: Damage) -> Builder:
    """``diagnose MODEL --base BASE --out OUT`` with ``damage`` done to BASE."""

    def build(i: Inputs) -> list[str]:
        base = i.copy("base")
        damage(base)
        return ["diagnose", str(i.copy("model")), "--base", str(base), "--out", i.out]

    return build


def diagnose_out(out: OutPath) -> Builder:
    """A valid model and base, a bad ``--out``."""

    def build(i: Inputs) -> list[str]:
        model, base = i.copy("model"), i.copy("base")
        return ["diagnose", str(model), "--base", str(base), "--out", out(i)]

    return build


def repair(model: Damage = nothing, base: Damage = nothing, out: OutPath | None = None) -> Builder:
    """``repair MODEL --base BASE --out OUT`` with damage to the model, the base or --out."""

    def build(i: Inputs) -> list[str]:
        m, b = i.copy("model"), i.copy("base")
        model(m)
        base(b)
        return ["repair", str(m), "--base", str(b), "--out", out(i) if out else i.out]

    return build


def apply_mask(damage: Damage) -> Builder:
    """``repair MODEL --base BASE --apply-mask MASK --out OUT`` with a damaged mask."""

    def build(i: Inputs) -> list[str]:
        mask = i.copy("mask", "masks/rollback_mask.safetensors")
        damage(mask)
        m, b = str(i.copy("model")), str(i.copy("base"))
        return ["repair", m, "--base", b, "--apply-mask", str(mask), "--out", i.out]

    return build


def config(command: str, toml: str, *extra: str) -> Builder:
    """``COMMAND MODEL [--base BASE] --config c.toml --out OUT`` with the given file text."""

    def build(i: Inputs) -> list[str]:
        path = i.root / "c.toml"
        path.write_text(toml + "\n")
        base = ["--base", str(i.copy("base"))] if command == "repair" else []
        model = str(i.copy("model"))
        return [command, model, *base, "--config", str(path), *extra, "--out", i.out]

    return build


def sail_preferences(line: str) -> Builder:
    """``repair MODEL --base BASE --method sail --preferences prefs.jsonl --out OUT`` with one
    preference line."""

    def build(i: Inputs) -> list[str]:
        path = i.root / "prefs.jsonl"
        path.write_text(line + "\n")
        m, b = str(i.copy("model")), str(i.copy("base"))
        return ["repair", m, "--base", b, "--method", "sail", "--preferences", str(path),
                "--out", i.out]  # fmt: skip

    return build


def organism(target: OutPath) -> Builder:
    """``organism build DIR``."""
    return lambda i: ["organism", "build", target(i)]


def out_in_adapter_base(command: str) -> Builder:
    """An adapter whose recorded base (never named on the command line as a model or base
    input of diagnose) would hold the ``--out``."""

    def build(i: Inputs) -> list[str]:
        base, adapter = i.copy("base"), i.copy("adapter")
        out = str(base / "report")
        if command == "diagnose":
            return ["diagnose", str(adapter), "--out", out]
        return ["repair", str(adapter), "--base", str(base), "--out", out]

    return build


def gguf_input(damage: Damage, command: str = "diagnose") -> Builder:
    """``diagnose tiny.gguf`` (or ``repair tiny.gguf --base BASE``) with ``damage`` done to
    a fresh copy of the tiny GGUF file."""

    def build(i: Inputs) -> list[str]:
        if "gguf" not in i.pristine:
            pytest.skip("the gguf package is not installed")
        path = i.copy("gguf", "tiny.gguf")
        damage(path)
        if command == "repair":
            return ["repair", str(path), "--base", str(i.copy("base")), "--out", i.out]
        return ["diagnose", str(path), "--out", i.out]

    return build


def several_ggufs(gguf_file: str | None) -> Builder:
    """``diagnose DIR [--gguf-file NAME]`` on a directory holding a.gguf and b.gguf."""

    def build(i: Inputs) -> list[str]:
        if "gguf" not in i.pristine:
            pytest.skip("the gguf package is not installed")
        directory = i.copy("gguf", "g/a.gguf").parent
        i.copy("gguf", "g/b.gguf")
        extra = ["--gguf-file", gguf_file] if gguf_file else []
        return ["diagnose", str(directory), *extra, "--out", i.out]

    return build


def truncate(path: Path) -> None:
    """Cut a file to half its size."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def gguf_architecture(name: str) -> Damage:
    """Rewrite the file's ``general.architecture`` (same length, so the layout stays valid)."""

    def damage(path: Path) -> None:
        data = path.read_bytes()
        old = b"\x05\x00\x00\x00\x00\x00\x00\x00llama"
        assert data.count(old) == 1 and len(name) == 5
        path.write_bytes(data.replace(old, old[:8] + name.encode()))

    return damage


def no_gguf_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "gguf", None)


def a_file(name: str) -> Callable[[Inputs], Path]:
    """Makes a plain file in the case's directory."""

    def make(i: Inputs) -> Path:
        path = i.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("a file\n")
        return path

    return make


def read_only(i: Inputs) -> Path:
    """A directory the case locks to 0o555."""
    (i.root / "ro").mkdir()
    return i.root / "ro"


def nul(i: Inputs) -> str:
    return str(i.root / "o\0ut")


def oom_at_load(monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers import AutoModelForCausalLM

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", _raise_oom)


def oom_later(monkeypatch: pytest.MonkeyPatch) -> None:
    import surgeon.diagnosis

    monkeypatch.setattr(surgeon.diagnosis, "class_activations", _raise_oom)


def _raise_oom(*_args: object, **_kwargs: object) -> None:
    raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


# ---------------------------------------------------------------------------------------------
# the table


@dataclass(frozen=True)
class Case:
    """One bad input and what the command must answer."""

    id: str
    """pytest id."""
    build: Builder
    """Makes the inputs under the case's directory and returns the CLI arguments."""
    expected: str
    """Text the one message line must contain; ``{root}`` is the case's directory."""
    code: int = 2
    """The exit code."""
    locked: tuple[tuple[str, int], ...] = ()
    """(path under the case's directory, mode) set after hashing: runs unprivileged."""
    patch: Callable[[pytest.MonkeyPatch], None] | None = None
    """Replaces a library call before the run (in-process cases only)."""


ST = "{root}/model/model.safetensors: not a valid safetensors file"
MODEL = "{root}/model"
NAN = "holds non-finite values"
OOM = "out of memory; try a smaller --batch-size, --dtype bfloat16 or --device-map auto"
OOM_LOAD = (
    "{root}/model: loading the model: out of memory (CUDA out of memory. Tried to allocate "
    "2.00 GiB); try a smaller --batch-size, --dtype bfloat16 or --device-map auto"
)
TOML = "{root}/c.toml: "
L9 = "model.layers.9.mlp.down_proj.weight"
L3 = "model.layers.3.mlp.down_proj.weight"
EMBED = "model.embed_tokens.weight"
LORA_B = "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"

CASES: list[Case] = [
    # safetensors structure
    Case("st-header-list", diagnose(header(lambda h: [1, 2])), f"{ST} (header is a JSON list)"),
    Case("st-header-number", diagnose(header(lambda h: 7)), f"{ST} (header is a JSON int)"),
    Case("st-no-data-offsets", diagnose(entry(WEIGHT, "data_offsets", drop=True)),
         f"{ST} (tensor '{WEIGHT}' has no data_offsets)"),
    Case("st-no-dtype", diagnose(entry(None, "dtype", drop=True)), "has no dtype)"),
    Case("st-entry-not-object", diagnose(header(lambda h: h.__setitem__(WEIGHT, [1]))),
         f"{ST} (tensor '{WEIGHT}' is not an object)"),
    Case("st-unknown-dtype", diagnose(entry(WEIGHT, "dtype", "Q7")),
         f"{ST} (invalid JSON in header: unknown variant `Q7`"),
    Case("st-negative-shape", diagnose(entry(WEIGHT, "shape", [-1, 128])),
         f"{ST} (tensor '{WEIGHT}' has shape [-1, 128], not a list of sizes)"),
    Case("st-shape-offsets-mismatch", diagnose(entry(WEIGHT, "shape", [64, 127])),
         f"{ST} (invalid shape, data type, or offset for tensor"),
    Case("st-reversed-offsets", diagnose(header(lambda h: h[WEIGHT]["data_offsets"].reverse())),
         f"{ST} (tensor '{WEIGHT}' has data_offsets"),
    Case("st-trailing-bytes", diagnose(header(lambda h: None, b"\0" * 16)),
         f"{ST} (incomplete metadata, file not fully covered)"),
    Case("st-metadata-not-text", diagnose(header(lambda h: h.update(__metadata__={"a": 1}))),
         f"{ST} (__metadata__ must map to text)"),
    Case("shard-index-map-list",
         diagnose(json_key("model.safetensors.index.json", "weight_map", []), model="sharded"),
         "{root}/sharded/model.safetensors.index.json: unreadable shard index (weight_map"),
    # non-finite weights, found before any model is loaded
    Case("nan-decoder-weight", diagnose(poison(WEIGHT), base=True),
         f"{MODEL}/model.safetensors: tensor {WEIGHT} {NAN} (1 NaN of 8192 entries)"),
    Case("inf-in-base", diagnose_base(poison(EMBED, float("inf"))),
         f"{{root}}/base/model.safetensors: tensor {EMBED} {NAN} (1 infinite of 5504 entries)"),
    Case("inf-in-last-shard", diagnose(poison(L3, float("-inf")), model="sharded"),
         f"{{root}}/sharded/model-00004-of-00004.safetensors: tensor {L3} {NAN} (1 infinite "
         "of 8192 entries)"),
    Case("nan-in-adapter", diagnose(poison_lora, model="adapter"),
         f"{{root}}/adapter/adapter_model.safetensors: tensor {LORA_B} {NAN} (1 NaN of"),
    # unreadable files: permission bits, enforced even for root
    Case("unreadable-weights", diagnose(nothing), f"{MODEL}/model.safetensors: cannot read "
         "(Permission denied)", locked=(("model/model.safetensors", 0o000),)),
    Case("unreadable-config", diagnose(nothing), f"{MODEL}/config.json: cannot read "
         "(Permission denied)", locked=(("model/config.json", 0o000),)),
    Case("unreadable-tokenizer", diagnose(nothing), f"{MODEL}/tokenizer.json: cannot read "
         "(Permission denied)", locked=(("model/tokenizer.json", 0o000),)),
    Case("unlistable-model-dir", diagnose(nothing), f"{MODEL}: cannot read the directory "
         "(Permission denied)", locked=(("model", 0o100),)),
    # tokenizer files
    Case("tokenizer-json-corrupt", diagnose(text("tokenizer.json", '{"version": "1.0", "tr')),
         f"{MODEL}/tokenizer.json: unreadable JSON"),
    Case("tokenizer-json-not-tokenizer", diagnose(text("tokenizer.json", '{"version": "1.0"}')),
         f"{MODEL}/tokenizer.json: not a valid tokenizer"),
    Case("tokenizer-config-list", diagnose(text("tokenizer_config.json", "[]")),
         f"{MODEL}/tokenizer_config.json: expected a JSON object, found a JSON list"),
    Case("chat-template-syntax", diagnose(text("chat_template.jinja", "{% for m in x %}{{ m }")),
         f"{MODEL}/chat_template.jinja: chat template does not compile"),
    # config.json
    Case("config-layers-six", diagnose(json_key("config.json", "num_hidden_layers", "six")),
         f"{MODEL}/config.json: field 'num_hidden_layers' must be a positive integer, got 'six'"),
    Case("config-heads-zero", diagnose(json_key("config.json", "num_attention_heads", 0)),
         f"{MODEL}/config.json: field 'num_attention_heads' must be a positive integer, got 0"),
    Case("config-hidden-not-multiple", diagnose(json_key("config.json", "hidden_size", 66)),
         f"{MODEL}/config.json: invalid model config (The hidden size (66) is not a multiple"),
    Case("config-rope-wrong-type", diagnose(json_key("config.json", "rope_parameters", 3)),
         f"{MODEL}/config.json: invalid model config (Field 'rope_parameters' with value 3"),
    Case("config-is-list", diagnose(text("config.json", "[1]")),
         f"{MODEL}/config.json: expected a JSON object, found a JSON list"),
    Case("adapter-base-not-text",
         diagnose(json_key("adapter_config.json", "base_model_name_or_path", 5), model="adapter"),
         "{root}/adapter/adapter_config.json: base_model_name_or_path must be text, got 5"),
    Case("model-path-nul", lambda i: ["diagnose", str(i.root / "m\0"), "--out", i.out],
         "model path contains an embedded null byte"),
    # --out, checked before any model is loaded
    Case("out-nul", diagnose_out(nul), "'--out': embedded null byte"),
    Case("out-parent-is-file", diagnose_out(lambda i: str(a_file("f")(i) / "out")),
         "{root}/f/out: cannot create it, {root}/f is a file, not a directory"),
    Case("out-is-file", diagnose_out(lambda i: str(a_file("f")(i))),
         "{root}/f: exists and is not a directory"),
    Case("out-read-only-parent", diagnose_out(lambda i: str(read_only(i) / "out")),
         "{root}/ro/out: cannot create the output directory in {root}/ro (Permission denied)",
         locked=(("ro", 0o555),)),
    Case("out-inside-adapter-base", out_in_adapter_base("diagnose"),
         "{root}/base/report: output directory is inside the input"),
    # repair
    Case("repair-nan-in-base", repair(base=poison(WEIGHT)),
         f"{{root}}/base/model.safetensors: tensor {WEIGHT} {NAN}"),
    Case("repair-corrupt-tokenizer", repair(model=text("tokenizer.json", "{")),
         f"{MODEL}/tokenizer.json: unreadable JSON"),
    Case("repair-config-type", repair(base=json_key("config.json", "vocab_size", "160")),
         "{root}/base/config.json: field 'vocab_size' must be a positive integer, got '160'"),
    Case("repair-no-data-offsets", repair(model=entry(WEIGHT, "data_offsets", drop=True)),
         f"{ST} (tensor '{WEIGHT}' has no data_offsets)"),
    Case("repair-out-parent-is-file", repair(out=lambda i: str(a_file("f")(i) / "o")),
         "{root}/f/o: cannot create it, {root}/f is a file, not a directory"),
    Case("repair-out-inside-adapter-base", out_in_adapter_base("repair"),
         "{root}/base/report: output directory is inside the input"),
    # rollback masks (--apply-mask), checked against both checkpoints' headers before loading
    Case("mask-index-out-of-range", apply_mask(mask_of(ints(1, 8192), [64, 128])),
         f"{{root}}/masks/rollback_mask.safetensors: index 8192 of {WEIGHT} is out of range "
         "for its shape [64, 128] (8192 entries)"),
    Case("mask-negative-index", apply_mask(mask_of(ints(-1, 3), [64, 128])),
         f"rollback_mask.safetensors: index -1 of {WEIGHT} is out of range"),
    Case("mask-from-another-model", apply_mask(mask_of(ints(1), [64, 128], L9)),
         f"rollback_mask.safetensors: rollback mask names {L9}, which the base {{root}}/base "
         "does not have"),
    Case("mask-wrong-shape", apply_mask(mask_of(ints(1), [128, 64])),
         f"rollback mask shape of {WEIGHT} is [128, 64], the base {{root}}/base has [64, 128]"),
    Case("mask-float-indices", apply_mask(mask_of(torch.tensor([1.0, 2.0]), [64, 128])),
         f"rollback_mask.safetensors: indices of {WEIGHT} are torch.float32, not integers"),
    Case("mask-2d-indices", apply_mask(mask_of(ints(1, 2).reshape(1, 2), [64, 128])),
         f"rollback_mask.safetensors: indices of {WEIGHT} have shape [1, 2], not flat"),
    Case("mask-shapes-missing", apply_mask(lambda p: save_file(
         {WEIGHT: ints(1)}, str(p), metadata={"format": MASK_FORMAT, "eligible_entries": "9"})),
         "rollback_mask.safetensors: rollback mask metadata is damaged (no shapes record)"),
    Case("mask-not-a-mask", apply_mask(lambda p: save_file({"x": torch.zeros(2)}, str(p))),
         "rollback_mask.safetensors: not a surgeon rollback mask (format None)"),
    # organism build
    Case("organism-not-an-organism", organism(lambda i: str(a_file("d/notes.txt")(i).parent)),
         "{root}/d: exists and is not a surgeon organism"),
    Case("organism-dir-is-file", organism(lambda i: str(a_file("f")(i))),
         "{root}/f: exists and is not a directory"),
    Case("organism-parent-is-file", organism(lambda i: str(a_file("f")(i) / "org")),
         "{root}/f/org: cannot create it, {root}/f is a file"),
    Case("organism-dir-nul", organism(nul), "'directory': embedded null byte"),
    Case("organism-read-only-parent", organism(lambda i: str(read_only(i) / "org")),
         "{root}/ro/org: cannot create the output directory in {root}/ro (Permission denied)",
         locked=(("ro", 0o555),)),
    # config files: wrong types, unknown keys, options of another command, bad tables
    Case("toml-batch-size-text", config("diagnose", 'batch_size = "x"'),
         TOML + "batch_size: expected an integer, got 'x'"),
    Case("toml-fail-on-number", config("diagnose", "fail_on = 3"),
         TOML + "fail_on: expected a table of harmful_increase"),
    Case("toml-fail-on-unknown-name", config("diagnose", "fail_on = {harm = 0.1}"),
         TOML + "fail_on: unknown key 'harm'"),
    Case("toml-fail-on-out-of-range", config("diagnose", "fail_on = {harmful_rate = 2.0}"),
         TOML + "fail_on: harmful_rate must be a share in [0, 1], got 2.0"),
    Case("toml-unknown-key", config("diagnose", "batchsize = 3"),
         TOML + "unknown key 'batchsize' for 'diagnose'"),
    Case("toml-repair-key-in-diagnose", config("diagnose", "[diagnose]\nselection = 'paper'"),
         TOML + "unknown key 'selection' for 'diagnose'"),
    Case("toml-invalid", config("diagnose", "batch_size = = 3"), TOML + "invalid TOML"),
    Case("toml-table-not-table", config("diagnose", "diagnose = 3"),
         TOML + "[diagnose] must be a table"),
    Case("toml-bool-for-int", config("diagnose", "seed = true"),
         TOML + "seed: expected an integer, got True"),
    Case("toml-float-for-int", config("diagnose", "max_prompts = 1.5"),
         TOML + "max_prompts: expected an integer, got 1.5"),
    Case("toml-validation", config("diagnose", "max_prompts = 0"),
         TOML + "max_prompts must be >= 1, got 0"),
    Case("toml-choice", config("repair", "[repair]\ntask_hold = 'sometimes'"),
         TOML + "task_hold: must be one of on-restart, always, never; got 'sometimes'"),
    Case("toml-dtype-choice", config("diagnose", "dtype = 'float8'"),
         TOML + "dtype: must be one of auto, float32, bfloat16, float16; got 'float8'"),
    Case("toml-share-out-of-range", config("repair", "[repair]\ntask_tolerance = 1.5"),
         TOML + "task_tolerance must lie in [0, 1]; got 1.5"),
    Case("toml-path-empty", config("diagnose", 'harmful = ""'),
         TOML + "harmful: expected a file path, got ''"),
    Case("toml-missing-file", lambda i: ["diagnose", str(i.copy("model")), "--config",
                                         str(i.root / "nope.toml"), "--out", i.out],
         "{root}/nope.toml: no such config file"),
    Case("toml-prompt-file-missing", config("diagnose", "harmful = 'nope.jsonl'"),
         "nope.jsonl: no such prompt file"),
    Case("flag-fail-on-not-a-number", config("diagnose", "", "--fail-on", "harmful_rate=x"),
         "--fail-on harmful_rate: 'x' is not a number"),
    Case("flag-bad-choice", config("repair", "", "--selection", "greedy"),
         "Invalid value for '--selection': 'greedy' is not one of 'task-aware', 'paper'."),
    Case("sail-bad-preference-line", sail_preferences('{"prompt": "p", "chosen": "a"}'),
         "{root}/prefs.jsonl:1: missing or empty 'rejected'"),
    Case("sail-focal-layer-out-of-range", config("repair", "", "--method", "sail",
                                                 "--focal-layers", "9"),
         "--focal-layers 9: the model has decoder layers 0..3"),
    # GGUF files
    Case("gguf-truncated", gguf_input(truncate),
         "{root}/tiny.gguf: corrupt or truncated GGUF file"),
    Case("gguf-truncated-repair", gguf_input(truncate, "repair"),
         "{root}/tiny.gguf: corrupt or truncated GGUF file"),
    Case("gguf-not-gguf", gguf_input(lambda p: p.write_text("not a model\n")),
         "{root}/tiny.gguf: not a GGUF file (no GGUF magic at its start)"),
    Case("gguf-unsupported-architecture", gguf_input(gguf_architecture("zzzzz")),
         "{root}/tiny.gguf: unsupported or corrupt GGUF file (GGUF model with architecture zzzzz"),
    Case("gguf-package-missing", gguf_input(nothing),
         "{root}/tiny.gguf: reading a GGUF file needs the gguf package: pip install "
         "'surgeon[gguf]'", patch=no_gguf_package),
    Case("gguf-several-in-dir", several_ggufs(None),
         "{root}/g: holds several GGUF files (a.gguf, b.gguf); pass --gguf-file NAME"),
    Case("gguf-file-not-in-dir", several_ggufs("c.gguf"),
         "{root}/g: holds no c.gguf (GGUF files in it: a.gguf, b.gguf)"),
    # running out of memory is exit 3, with the advice
    Case("oom-at-load", diagnose(nothing), OOM_LOAD, code=3, patch=oom_at_load),
    Case("oom-later", diagnose(nothing), OOM, code=3, patch=oom_later),
]  # fmt: skip


def _params() -> list[object]:
    return [pytest.param(case, id=case.id) for case in CASES]


def state(root: Path) -> tuple[dict[str, str], list[str]]:
    """Every file's hash and every directory under ``root``."""
    dirs = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_dir())
    return tree_hash(root), dirs


@dataclass(frozen=True)
class Outcome:
    """What one CLI run answered, and the case directory's state around it."""

    root: Path
    code: int
    output: str
    before: tuple[dict[str, str], list[str]]
    after: tuple[dict[str, str], list[str]]


UNPRIVILEGED_RUNNER = """
import json, sys
from typer.testing import CliRunner
from cli import app
runs = json.loads(open(sys.argv[1]).read())
out = {}
for key, args in runs.items():
    result = CliRunner().invoke(app, args)
    out[key] = [result.exit_code, result.output]
open(sys.argv[2], "w").write(json.dumps(out))
"""


@pytest.fixture(scope="module")
def locked_outcomes(
    pristine: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Outcome]:
    """Every case with ``locked`` paths, run in ONE subprocess that permission bits bind even
    as root (:func:`surgeon.testing.run_unprivileged`): importing the CLI costs seconds."""
    top = tmp_path_factory.mktemp("locked")
    cases = [c for c in CASES if c.locked]
    roots, args, before, modes = {}, {}, {}, {}
    for case in cases:
        inputs = Inputs(top / case.id, pristine)
        inputs.root.mkdir()
        args[case.id] = case.build(inputs)
        roots[case.id] = inputs.root
        before[case.id] = state(inputs.root)
        for rel, mode in case.locked:
            modes[case.id, rel] = (inputs.root / rel).stat().st_mode
            (inputs.root / rel).chmod(mode)
    (top / "runs.json").write_text(json.dumps(args))
    try:
        proc = run_unprivileged(
            [sys.executable, "-c", UNPRIVILEGED_RUNNER, str(top / "runs.json"), str(top / "o")]
        )
    finally:
        for (key, rel), mode in modes.items():
            (roots[key] / rel).chmod(mode)
    assert proc.returncode == 0, proc.stderr
    results = json.loads((top / "o").read_text())
    return {
        key: Outcome(roots[key], code, output, before[key], state(roots[key]))
        for key, (code, output) in results.items()
    }


def run_case(case: Case, inputs: Inputs, monkeypatch: pytest.MonkeyPatch) -> Outcome:
    """Build a case's inputs and run the CLI in-process (CliRunner)."""
    inputs.root.mkdir()
    args = case.build(inputs)
    before = state(inputs.root)
    if case.patch is not None:
        case.patch(monkeypatch)
    result = runner.invoke(app, args)
    return Outcome(inputs.root, result.exit_code, result.output, before, state(inputs.root))


def test_ids_are_unique() -> None:
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids))
    assert not [c.id for c in CASES if c.locked and c.patch], "locked cases run in a subprocess"


@pytest.mark.parametrize("case", _params())
def test_bad_input(
    case: Case,
    pristine: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    if case.locked:
        got = request.getfixturevalue("locked_outcomes")[case.id]
    else:
        got = run_case(case, Inputs(tmp_path / "case", pristine), monkeypatch)
    lines = [line for line in got.output.splitlines() if line.strip()]
    assert len(lines) == 1, got.output
    assert "Traceback" not in got.output
    assert lines[0].startswith("surgeon: error: "), lines[0]
    assert case.expected.format(root=got.root) in lines[0], lines[0]
    assert got.code == case.code, got.output
    assert got.after == got.before, "the run changed its inputs or left files behind"
