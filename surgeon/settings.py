"""The settings of each command, resolved from defaults, a TOML file and the flags.

Every option is a field of a typed config (:mod:`surgeon.options`): ``DiagnoseConfig`` for
``surgeon diagnose``; for ``surgeon repair``, one run config per method (``RollbackRun``).
A config file holds option keys at its top level or in a table named after the command
(``[diagnose]``, ``[repair]``), whose keys win; flags win over both. Unknown keys, values of the
wrong type and options of another repair method are :class:`InputError` naming the file (or
the flag) and the key.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from surgeon.config_file import read_config
from surgeon.errors import InputError
from surgeon.options import Option, base_type, build, coerce, flat_values, options_of
from surgeon.repair.registry import METHODS, PLANNED, method

REPAIR_METHODS = (*METHODS, *PLANNED)
"""Every repair method the command line names."""


def diagnose_config_class() -> type:
    """The root config of ``surgeon diagnose``."""
    from surgeon.diagnose_config import DiagnoseConfig

    return DiagnoseConfig


def repair_config_classes() -> dict[str, type]:
    """The root config of ``surgeon repair`` per implemented method."""
    return {name: method(name).Run for name in METHODS}


def command_options(command: str) -> tuple[Option, ...]:
    """Every option a command accepts (for ``repair``: of all methods, each key once)."""
    if command == "diagnose":
        return options_of(diagnose_config_class())
    seen: dict[str, Option] = {}
    for cls in repair_config_classes().values():
        for option in options_of(cls):
            seen.setdefault(option.key, option)
    return tuple(seen.values())


def parse_pairs(option: Option, items: list[str]) -> dict[str, Any]:
    """``["harmful_increase=0.03", ...]`` for a table option, values typed by the table."""
    assert option.table_of is not None
    fields = {o.key: o for o in options_of(option.table_of)}
    out: dict[str, Any] = {}
    for item in items:
        name, sep, text = str(item).partition("=")
        name = name.strip()
        if not sep:
            raise InputError(f"{option.flag_name} {item!r}: expected NAME=VALUE")
        if name not in fields:
            raise InputError(
                f"{option.flag_name}: unknown name {name!r} (known: {', '.join(fields)})"
            )
        out[name] = _parse_text(text.strip(), fields[name], f"{option.flag_name} {name}")
    return out


def _parse_text(text: str, option: Option, where: str) -> Any:
    kind = base_type(option.annotation)
    try:
        if kind is float:
            return float(text)
        if kind is int:
            return int(text)
    except ValueError:
        raise InputError(f"{where}: {text!r} is not a number") from None
    return text


def _file_values(path: Path | None, command: str) -> dict[str, Any]:
    return read_config(path, command) if path is not None else {}


def resolve(
    command: str, config_file: Path | None, flags: Mapping[str, Any], method: str | None = None
) -> Any:
    """The root config of ``command`` from the file and the flags the user gave.

    ``flags`` maps option keys to values, ``None`` for a flag not given; table options take
    their ``NAME=VALUE`` strings. ``method`` (repair): the ``--method`` flag, else the file's
    ``method`` key, else ``rollback``.
    """
    from_file = _file_values(config_file, command)
    where = str(config_file)
    chosen = ""
    if command == "diagnose":
        cls = diagnose_config_class()
    else:
        chosen = method or from_file.pop("method", None) or "rollback"
        from_file.pop("method", None)
        if chosen not in REPAIR_METHODS:
            raise InputError(f"--method must be one of {', '.join(REPAIR_METHODS)}; got {chosen!r}")
        classes = repair_config_classes()
        if chosen not in classes:
            raise InputError(f"--method {chosen} is not implemented yet (see the roadmap)")
        cls = classes[chosen]
    options = {o.key: o for o in options_of(cls)}
    every = {o.key for o in command_options(command)}
    raw: dict[str, tuple[Any, str]] = {}
    for key, value in from_file.items():
        if key not in options:
            if key in every:
                raise InputError(f"{where}: {key!r} is not an option of --method {chosen}")
            raise InputError(
                f"{where}: unknown key {key!r} for '{command}' (known: {', '.join(options)})"
            )
        raw[key] = (value, f"{where}: {key}")
    for key, value in flags.items():
        if value is None or value == [] or value == ():
            continue
        option = options.get(key)
        if option is None:
            raise InputError(f"--{key.replace('_', '-')} is not an option of --method {chosen}")
        if option.table_of is not None and isinstance(value, (list, tuple)):
            before = raw.get(key, ({}, ""))[0]
            before = before if isinstance(before, Mapping) else {}
            value = {**before, **parse_pairs(option, value)}
        raw[key] = (value, option.flag_name)
    values = {k: coerce(v, options[k].annotation, w) for k, (v, w) in raw.items()}
    return build(cls, values, where if config_file is not None else "settings")


def effective_settings(config: Any) -> dict[str, Any]:
    """The settings a run used, for config.toml: every option with a value (None dropped)."""
    values = {k: v for k, v in flat_values(config).items() if v is not None}
    method = getattr(config, "method", None)
    return {"method": method, **values} if method else values


def default_out_dir(command: str, model: str) -> Path:
    """``surgeon-reports/<command>-<model name>-<UTC time>``: never an existing directory."""
    name = re.sub(r"[^\w.-]+", "_", Path(model.rstrip("/")).name) or "model"
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    return Path("surgeon-reports") / f"{command}-{name}-{stamp}"
