"""Settings shared by the commands: defaults, config-file keys, and the typed configs built
from them. The CLI collects flags into a dict; everything past that lives here."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from surgeon.errors import InputError
from surgeon.loading import LoadOptions
from surgeon.verdict import Thresholds

COMMON_DEFAULTS: dict[str, Any] = {
    "dtype": "auto",
    "device": "cpu",
    "device_map": None,
    "trust_remote_code": False,
    "batch_size": 16,
    "seed": 0,
}
"""Flags every model-running command takes."""

FAIL_ON_KEYS = {
    "harmful_increase": "max_harmful_increase",
    "over_refusal_increase": "max_over_refusal_increase",
    "harmful_rate": "max_harmful_rate",
}
"""``--fail-on NAME=VALUE`` names and the :class:`Thresholds` fields they set."""


def load_options(settings: Mapping[str, Any]) -> LoadOptions:
    """The loader options among the settings."""
    return LoadOptions(
        dtype=settings["dtype"],
        device=settings["device"],
        device_map=settings["device_map"],
        trust_remote_code=bool(settings["trust_remote_code"]),
    )


def parse_fail_on(value: Any) -> Thresholds:
    """Thresholds from ``["harmful_increase=0.05", ...]`` (flags) or a TOML table."""
    if value is None:
        return Thresholds()
    pairs: dict[str, Any]
    if isinstance(value, Mapping):
        pairs = dict(value)
    else:
        pairs = {}
        for item in value:
            name, sep, number = str(item).partition("=")
            if not sep:
                raise InputError(f"--fail-on {item!r}: expected NAME=VALUE")
            pairs[name.strip()] = number.strip()
    kwargs: dict[str, float] = {}
    for name, number in pairs.items():
        if name not in FAIL_ON_KEYS:
            raise InputError(
                f"--fail-on: unknown threshold {name!r} (known: {', '.join(FAIL_ON_KEYS)})"
            )
        try:
            kwargs[FAIL_ON_KEYS[name]] = float(number)
        except (TypeError, ValueError):
            raise InputError(f"--fail-on {name}: {number!r} is not a number") from None
    try:
        return Thresholds(**kwargs)
    except ValueError as exc:
        raise InputError(f"--fail-on: {exc}") from None


def default_out_dir(command: str, model: str) -> Path:
    """``surgeon-reports/<command>-<model name>-<UTC time>``: never an existing directory."""
    name = re.sub(r"[^\w.-]+", "_", Path(model.rstrip("/")).name) or "model"
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    return Path("surgeon-reports") / f"{command}-{name}-{stamp}"


def optional_path(value: Any) -> Path | None:
    """A path setting, or None."""
    return Path(value) if value not in (None, "") else None
