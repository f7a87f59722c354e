"""GGUF input: a llama.cpp / Ollama file becomes a cached, plain safetensors model directory.

surgeon's weights probe and rollback read safetensors directories lazily, one tensor at a
time, and every other part of surgeon takes a model directory. So a GGUF input is converted
once, through transformers' GGUF loader (dequantized to float32, exactly what
``from_pretrained(dir, gguf_file=name)`` gives), into a standard Hugging Face directory with
its tokenizer, and from then on it is an ordinary model directory everywhere:

* the cache lives in ``$SURGEON_GGUF_CACHE`` (default ``~/.cache/surgeon/gguf``), one
  directory per file content (``<stem>-<sha256 prefix>``), so a copied or renamed file reuses
  it and an edited one never does;
* a directory is written to a temporary sibling and renamed into place when complete, so an
  interrupted conversion leaves nothing that looks finished, and two processes converting the
  same file at once both end up with one complete directory;
* ``gguf_source.json`` in it records the source file, its size and digest.

The ``gguf`` package is an optional extra (``pip install 'surgeon[gguf]'``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from surgeon.errors import InputError

CACHE_ENV = "SURGEON_GGUF_CACHE"
"""Environment variable naming the directory of GGUF conversions."""
CONVERSION_VERSION = 1
"""Bumped when the conversion's output changes, so old cache entries are not reused."""
GGUF_MAGIC = b"GGUF"
SOURCE_RECORD = "gguf_source.json"
INSTALL_HINT = "pip install 'surgeon[gguf]'"

_digest_memo: dict[tuple[str, int, int, int, int], str] = {}


@dataclass(frozen=True)
class GgufFile:
    """A GGUF file that a reference names."""

    path: Path
    """The resolved file."""
    size: int
    """Its size in bytes."""
    sha256: str
    """Hex digest of its contents."""


def default_cache_dir() -> Path:
    """``$SURGEON_GGUF_CACHE`` if set, else ``~/.cache/surgeon/gguf``."""
    root = os.environ.get(CACHE_ENV)
    return Path(root).expanduser() if root else Path.home() / ".cache" / "surgeon" / "gguf"


def _has_magic(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            return f.read(4) == GGUF_MAGIC
    except OSError:
        return False


def find_gguf(ref: str | Path, gguf_file: str | None = None) -> Path | None:
    """The GGUF file ``ref`` names, or None when ``ref`` is not a GGUF reference.

    A GGUF reference is a ``.gguf`` file (or any file starting with the GGUF magic), a
    directory holding ``gguf_file`` (a file name in it; ``--gguf-file`` applies to MODEL and
    BASE alike, so a directory without that file is resolved as usual), or a directory
    without ``config.json`` holding ``.gguf`` files: exactly one, or several with
    ``gguf_file`` naming one. Raises :class:`InputError` for a directory holding several GGUF
    files and no ``gguf_file`` among them.
    """
    path = Path(ref).expanduser()
    if path.is_file():
        return path if path.suffix.lower() == ".gguf" or _has_magic(path) else None
    if not path.is_dir():
        return None
    if gguf_file is not None:
        if Path(gguf_file).name != gguf_file:
            raise InputError(f"--gguf-file {gguf_file}: must be a file name, not a path")
        if (path / gguf_file).is_file():
            return path / gguf_file
    if (path / "config.json").exists():
        return None
    found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() == ".gguf")
    if len(found) > 1:
        names = ", ".join(p.name for p in found)
        if gguf_file is not None:
            raise InputError(f"{path}: holds no {gguf_file} (GGUF files in it: {names})")
        raise InputError(f"{path}: holds several GGUF files ({names}); pass --gguf-file NAME")
    return found[0] if found else None


def file_digest(path: Path) -> str:
    """SHA-256 of a file's contents, memoised within the process per path, inode, size and
    modification times (so a resolution repeated during one run hashes the file once)."""
    st = path.stat()
    key = (str(path.resolve()), st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    if key not in _digest_memo:
        h = hashlib.sha256()
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
        _digest_memo[key] = h.hexdigest()
    return _digest_memo[key]


def require_gguf_package(path: Path) -> None:
    """Raise :class:`InputError` with the install line when ``gguf`` cannot be imported."""
    try:
        import gguf  # noqa: F401
    except ImportError:
        raise InputError(
            f"{path}: reading a GGUF file needs the gguf package: {INSTALL_HINT}"
        ) from None


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def check_gguf(path: Path) -> None:
    """Parse the header and tensor table; a corrupt or truncated file is an :class:`InputError`.

    gguf's reader memory-maps the file and views every tensor's data, so a file cut short
    fails here, before any dequantization.
    """
    require_gguf_package(path)
    from gguf import GGUFReader

    if not _has_magic(path):
        raise InputError(f"{path}: not a GGUF file (no GGUF magic at its start)")
    try:
        reader = GGUFReader(path)
        n_tensors = len(reader.tensors)
    except (ValueError, IndexError, KeyError, OSError, EOFError, TypeError) as exc:
        raise InputError(f"{path}: corrupt or truncated GGUF file ({_first_line(exc)})") from None
    if n_tensors == 0:
        raise InputError(f"{path}: GGUF file holds no tensors (a vocabulary-only file?)")


def _plain_model(loaded: Any) -> Any:
    """A fresh model of the same config without ``quantization_config``, sharing the weights.

    transformers flags a GGUF-loaded model as quantized and refuses ``save_pretrained``; the
    fresh model is built on the meta device and takes the loaded tensors by assignment, so
    nothing is copied.
    """
    import torch
    from transformers import AutoModelForCausalLM

    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = torch.float32
    with torch.device("meta"):
        fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    state = loaded.state_dict()
    missing, unexpected = fresh.load_state_dict(state, strict=False, assign=True)
    tied = set(fresh._tied_weights_keys or {}) if hasattr(fresh, "_tied_weights_keys") else set()
    missing = [k for k in missing if k not in tied]
    if missing or unexpected:
        raise RuntimeError(
            f"state dict mismatch: missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
    fresh.tie_weights()
    for name, buffer in loaded.named_buffers():
        # non-persistent buffers (rotary inv_freq) are not in the state dict
        owner, _, leaf = name.rpartition(".")
        module = fresh.get_submodule(owner) if owner else fresh
        if leaf in module._buffers and module._buffers[leaf] is not None:
            module._buffers[leaf] = buffer
    meta = [n for n, p in fresh.named_parameters() if p.is_meta]
    meta += [n for n, b in fresh.named_buffers() if b.is_meta]
    if meta:
        raise RuntimeError(f"parameters left unloaded: {meta[:3]}")
    fresh.generation_config = loaded.generation_config
    return fresh.eval()


def _publish_permissions(directory: Path) -> None:
    """Give a finished directory the usual modes (mkdtemp made it private)."""
    umask = os.umask(0)
    os.umask(umask)
    directory.chmod(0o777 & ~umask)
    for path in directory.iterdir():
        if path.is_file():
            path.chmod(0o666 & ~umask)


def gguf_to_directory(gguf_path: str | Path, out_dir: str | Path) -> Path:
    """Dequantize a GGUF file into a plain safetensors model directory ``out_dir`` (float32).

    ``out_dir`` must not exist or be empty; it is written through a temporary sibling and
    renamed when complete. Raises :class:`InputError` without the ``gguf`` package (with the
    install line), and with one line naming the file when it is corrupt, truncated or of an
    architecture transformers cannot read.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from surgeon.progress import sync_library_bars

    src = Path(gguf_path).expanduser().absolute()
    out = Path(out_dir).expanduser().absolute()
    if not src.is_file():
        raise InputError(f"{src}: no such GGUF file")
    if out.exists() and any(out.iterdir()):
        raise InputError(f"{out}: exists and is not empty; refusing to overwrite it")
    check_gguf(src)
    sync_library_bars()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.converting-", dir=out.parent))
    try:
        try:
            # transformers' dequantization bar is plain tqdm (on stderr, once per conversion)
            loaded = AutoModelForCausalLM.from_pretrained(
                str(src.parent), gguf_file=src.name, dtype=torch.float32
            )
            tokenizer = AutoTokenizer.from_pretrained(str(src.parent), gguf_file=src.name)
            model = _plain_model(loaded)
        except ImportError:
            raise InputError(f"{src}: reading a GGUF file needs {INSTALL_HINT}") from None
        except (ValueError, KeyError, IndexError, RuntimeError, NotImplementedError) as exc:
            raise InputError(
                f"{src}: unsupported or corrupt GGUF file ({_first_line(exc)})"
            ) from None
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        record = {
            "conversion_version": CONVERSION_VERSION,
            "source": str(src),
            "size": src.stat().st_size,
            "sha256": file_digest(src),
            "dtype": "float32",
        }
        (tmp / SOURCE_RECORD).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        _publish_permissions(tmp)
        if out.exists():
            out.rmdir()  # empty, checked above
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def _is_complete(directory: Path, digest: str) -> bool:
    record = directory / SOURCE_RECORD
    if not record.is_file():
        return False
    try:
        data = json.loads(record.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    return data.get("sha256") == digest and data.get("conversion_version") == CONVERSION_VERSION


def cached_directory(gguf_path: Path, cache_dir: Path | None = None) -> Path:
    """The cached plain directory for a GGUF file, converting it on first use."""
    src = gguf_path.expanduser().absolute()
    require_gguf_package(src)
    digest = file_digest(src)
    root = (cache_dir or default_cache_dir()).expanduser().absolute()
    target = root / f"{src.stem}-{digest[:16]}"
    if _is_complete(target, digest):
        return target
    if target.exists():
        # an older conversion version, or a directory someone else left: replace it
        shutil.rmtree(target, ignore_errors=True)
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=root))
    try:
        converted = gguf_to_directory(src, staging / "model")
        try:
            os.replace(converted, target)
        except OSError:
            # another process finished the same conversion first
            if not _is_complete(target, digest):
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def resolve_gguf(
    ref: str | Path, gguf_file: str | None = None, cache_dir: Path | None = None
) -> Path | None:
    """The cached plain model directory for a GGUF reference; None when ``ref`` is not one.

    See :func:`find_gguf` for what counts as a GGUF reference. The first call for a given file
    content converts it (seconds to minutes, once); later calls only hash the file.
    """
    found = find_gguf(ref, gguf_file)
    if found is None:
        return None
    return cached_directory(found, cache_dir)
