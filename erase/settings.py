"""A registered module's settings: its config dataclass filled from defaults, the toy world's
overrides and the user's, each user value checked against the field's type.

Methods (``erase.methods``) and attacks (``erase.attacks``) are both modules holding a frozen
``Config``, a ``TOY`` dict and a ``SMOKE`` dict; this is the one place their settings are built.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import fields

from erase.errors import EraseError

_TYPES = {"int": int, "float": float, "bool": bool, "str": str}


def build_config(
    owner: str, module, overrides: dict | None, *, toy: bool = False, variant: dict | None = None
):
    """``module.Config`` from its defaults, then ``module.TOY`` when ``toy``, then ``variant``'s
    fields, then the user's ``overrides`` (None values ignored; unknown names refused)."""
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    known = {f.name for f in fields(module.Config)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise EraseError(f"{owner} has no setting {unknown[0]!r}; it has {', '.join(sorted(known))}")
    types = {f.name: f.type for f in fields(module.Config)}
    overrides = {k: typed(owner, k, types[k], v) for k, v in overrides.items()}
    values = (dict(module.TOY) if toy else {}) | (variant or {}) | overrides
    return module.Config(**values)


def typed(owner: str, name: str, annotation, value):
    """A user's setting checked against the config field's type (``--set low_memory=maybe`` or
    ``steps: ten`` would otherwise reach the module as a string); an int is accepted as a float."""
    want = _TYPES.get(annotation if isinstance(annotation, str) else getattr(annotation, "__name__", ""))
    if want is None:
        return value
    if want is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if want is float and isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
        with contextlib.suppress(ValueError):
            value = float(value)
    if want is float and isinstance(value, float) and not math.isfinite(value):
        raise EraseError(f"{owner} setting {name} must be a finite number, got {value}")
    if isinstance(value, want) and (want is bool or not isinstance(value, bool)):
        return value
    example = {"int": "200", "float": "1e-4", "bool": "true or false", "str": "a word"}[want.__name__]
    raise EraseError(f"{owner} setting {name} must be {want.__name__} ({example}), got {value!r}")
