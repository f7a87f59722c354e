"""Options read off the typed configs: names, types, defaults, docs and validation in one place.

A config is a frozen dataclass whose fields carry docstrings (EleutherAI/sparsify style). Each
field is one option: its name is the TOML key (and, with dashes, the CLI flag), its annotation
the type every source is checked against, its default the default, its docstring the
documentation, and the dataclass's ``__post_init__`` the remaining validation. Two markers say
how a field is exposed:

* :func:`flag` — also a command-line flag (``--max-prompts`` for ``max_prompts``);
* :func:`nested` — a sub-config whose own fields are options at the same level (``LoadOptions``
  inside ``DiagnoseConfig``: ``dtype``, ``device``...);
* :func:`table` — a sub-config given as a TOML table (``fail_on = {harmful_increase = 0.03}``) and
  as repeated ``--fail-on NAME=VALUE`` flags.

Everything else is a TOML-only option. :func:`options_of` lists them, :func:`build` makes the
config from checked values, :func:`flat_values` turns a config back into TOML-ready values.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import textwrap
import types
import typing
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

from surgeon.errors import InputError

_FLAG, _NESTED, _TABLE = "surgeon.flag", "surgeon.nested", "surgeon.table"


def flag(default: Any = MISSING, *, default_factory: Any = MISSING) -> Any:
    """A config field that is also a command-line flag."""
    if default_factory is not MISSING:
        return field(default_factory=default_factory, metadata={_FLAG: True})
    return field(default=default, metadata={_FLAG: True})


def nested(default_factory: Any, *, flags: bool = False) -> Any:
    """A sub-config field whose own fields are options of the enclosing config (all of them
    command-line flags with ``flags``)."""
    return field(default_factory=default_factory, metadata={_NESTED: True, _FLAG: flags})


def table(default_factory: Any, *, cli: bool = True) -> Any:
    """A sub-config field given as a TOML table and (``cli``) as ``--name KEY=VALUE`` flags."""
    return field(default_factory=default_factory, metadata={_TABLE: True, _FLAG: cli})


@dataclass(frozen=True)
class Option:
    """One option of a config, as every source (TOML, CLI, Python) sees it."""

    key: str
    """TOML key and Python keyword; the CLI flag is ``--`` plus the key with dashes."""
    path: tuple[str, ...]
    """Attribute path from the root config, e.g. ``("load", "dtype")``."""
    annotation: Any
    """The field's resolved type (``int``, ``float | None``, ``Literal[...]``, a dataclass)."""
    default: Any
    """The default value."""
    doc: str
    """The field's docstring."""
    is_flag: bool
    """Also a command-line flag."""
    table_of: type | None = None
    """For a table option: the dataclass whose fields are the table's keys."""

    @property
    def flag_name(self) -> str:
        """``--max-prompts`` for ``max_prompts``."""
        return "--" + self.key.replace("_", "-")

    @property
    def choices(self) -> tuple[str, ...]:
        """The allowed values of a ``Literal`` option (empty otherwise)."""
        return literal_choices(self.annotation)

    def help(self) -> str:
        """The docstring's first paragraph, with the default (shown once, here)."""
        text = " ".join(self.doc.split("\n\n", 1)[0].replace("``", "").split())
        if self.table_of is not None:
            keys = ", ".join(o.key for o in options_of(self.table_of))
            return f"{text} NAME=VALUE, repeatable; names: {keys}."
        if self.default is None or self.default == ():
            return text
        default = str(self.default).lower() if isinstance(self.default, bool) else self.default
        return f"{text} (default: {default})"


@cache
def field_docs(cls: type) -> dict[str, str]:
    """Attribute docstrings of a dataclass (and its bases): the string right under a field."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if klass is object or not dataclasses.is_dataclass(klass):
            continue
        tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        body = tree.body[0].body  # type: ignore[attr-defined]
        for node, after in zip(body, [*body[1:], None], strict=True):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant)
                and isinstance(after.value.value, str)
            ):
                docs[node.target.id] = inspect.cleandoc(after.value.value)
    return docs


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return MISSING


@cache
def options_of(
    cls: type, prefix: tuple[str, ...] = (), all_flags: bool = False
) -> tuple[Option, ...]:
    """Every option of config class ``cls``, nested configs flattened, in field order
    (``all_flags``: every option is a flag, for a sub-config nested with ``flags``)."""
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    out: list[Option] = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        hint = hints[f.name]
        if f.metadata.get(_NESTED):
            out.extend(options_of(hint, (*prefix, f.name), bool(f.metadata.get(_FLAG))))
            continue
        table_of = hint if f.metadata.get(_TABLE) else None
        out.append(
            Option(
                key=f.name,
                path=(*prefix, f.name),
                annotation=hint,
                default=_default(f),
                doc=docs.get(f.name, ""),
                is_flag=all_flags or bool(f.metadata.get(_FLAG)),
                table_of=table_of,
            )
        )
    keys = [o.key for o in out]
    clash = sorted({k for k in keys if keys.count(k) > 1})
    if clash:
        raise TypeError(f"{cls.__name__}: options {clash} are defined twice")
    return tuple(out)


def literal_choices(annotation: Any) -> tuple[str, ...]:
    """The values of a ``Literal`` (also inside ``X | None``)."""
    if get_origin(annotation) is Literal:
        return tuple(str(a) for a in get_args(annotation))
    if get_origin(annotation) in (Union, types.UnionType):
        for arg in get_args(annotation):
            if get_origin(arg) is Literal:
                return literal_choices(arg)
    return ()


def base_type(annotation: Any) -> Any:
    """``int`` for ``int | None``; the annotation itself otherwise."""
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


_KIND_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def coerce(value: Any, annotation: Any, where: str) -> Any:
    """``value`` checked against ``annotation`` (ints accepted for floats, strings for paths);
    :class:`InputError` naming ``where`` when it does not fit."""
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        args = get_args(annotation)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(value, arg, where)
            except InputError as exc:
                errors.append(exc)
        raise errors[0]
    if origin is Literal:
        allowed = get_args(annotation)
        if value in allowed and not isinstance(value, bool):
            return value
        names = ", ".join(str(a) for a in allowed)
        raise InputError(f"{where}: must be one of {names}; got {value!r}")
    if origin is tuple:
        item = get_args(annotation)[0]
        if not isinstance(value, (list, tuple)):
            raise InputError(f"{where}: expected a list, got {value!r}")
        return tuple(coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value))
    if annotation is Any:
        return value
    if annotation is Path:
        if isinstance(value, Path):
            return value
        if isinstance(value, str) and value and "\0" not in value:
            return Path(value)
        raise InputError(f"{where}: expected a file path, got {value!r}")
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if annotation in _KIND_NAMES:
        if isinstance(value, annotation) and not (annotation is int and isinstance(value, bool)):
            return value
        raise InputError(f"{where}: expected {_KIND_NAMES[annotation]}, got {value!r}")
    if dataclasses.is_dataclass(annotation):
        if isinstance(value, annotation):
            return value
        if not isinstance(value, Mapping):
            raise InputError(f"{where}: expected a table of {_keys(annotation)}, got {value!r}")
        return build(annotation, value, where)
    raise TypeError(f"{where}: no rule for options of type {annotation!r}")


def _keys(cls: type) -> str:
    return ", ".join(o.key for o in options_of(cls))


def build(cls: type, values: Mapping[str, Any], where: str = "settings") -> Any:
    """A ``cls`` from option values keyed by option key (nested configs built too).

    Each value is checked with :func:`coerce`; unknown keys and the config's own validation
    errors become :class:`InputError` naming ``where``.
    """
    known = {o.key: o for o in options_of(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise InputError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(known)})")
    checked = {k: coerce(v, known[k].annotation, f"{where}: {k}") for k, v in values.items()}
    return _construct(cls, checked, (), where)


def _construct(cls: type, values: Mapping[str, Any], prefix: tuple[str, ...], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        if f.metadata.get(_NESTED):
            kwargs[f.name] = _construct(hints[f.name], values, (*prefix, f.name), where)
        elif f.name in values:
            kwargs[f.name] = values[f.name]
    try:
        return cls(**kwargs)
    except InputError as exc:
        raise InputError(f"{where}: {exc}") from None
    except (TypeError, ValueError) as exc:
        raise InputError(f"{where}: {exc}") from None


def flat_values(config: Any) -> dict[str, Any]:
    """Option key -> value of a config (nested configs flattened, tables as dicts): the
    effective settings, ready for config.toml."""
    out: dict[str, Any] = {}
    for option in options_of(type(config)):
        value: Any = config
        for name in option.path:
            value = getattr(value, name)
        if option.table_of is not None:
            value = {o.key: getattr(value, o.key) for o in options_of(option.table_of)}
        out[option.key] = value
    return out
