"""The small grammars a user types, parsed without torch: seed and id lists, ``NAME=VALUE``
settings, comma lists and per-optimizer learning rates.

The CLI and pipeline files read the same text through these functions, so ``1000-1003`` means the
same seeds on the command line and in YAML. Every mistake is one ``EraseError`` that shows the
text and what it should look like.
"""

from __future__ import annotations

import re
from pathlib import Path

from erase.errors import EraseError


def parse_seeds(text: str) -> list[int]:
    """``"0,1,2"``, ``"1000-1007"`` (inclusive) or a mix: ``"0-3,10"``."""
    seeds: list[int] = []
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        if part.startswith("-"):
            raise EraseError(f"seeds must be non-negative, got {part}")
        try:
            if "-" in part:
                lo, hi = (int(x) for x in part.split("-", 1))
                if hi < lo:
                    raise EraseError(f"seed range {part!r} is empty; write LOW-HIGH with LOW <= HIGH")
                seeds.extend(range(lo, hi + 1))
            else:
                seeds.append(int(part))
        except ValueError:
            raise EraseError(f"seeds {text!r} must be integers like 0,1,2 or a range 1000-1007") from None
    if not seeds:
        raise EraseError("no seeds given; pass e.g. --seeds 0,1,2 or --seeds 1000-1007")
    return seeds


def format_seeds(seeds) -> str:
    """The inverse of ``parse_seeds``, with runs written as ranges: ``(1000, 1001, 1002)`` -> ``1000-1002``."""
    parts, seeds = [], list(seeds)
    i = 0
    while i < len(seeds):
        j = i
        while j + 1 < len(seeds) and seeds[j + 1] == seeds[j] + 1:
            j += 1
        parts.append(str(seeds[i]) if j == i else f"{seeds[i]}-{seeds[j]}")
        i = j + 1
    return ",".join(parts)


def parse_ids(text: str) -> list[int]:
    """Sample ids: ``1,2,10-20`` or ``@FILE`` (one id per line); empty text is no ids."""
    if not text:
        return []
    if text.startswith("@"):
        path = Path(text[1:])
        try:
            text = ",".join(ln.strip() for ln in path.read_text().splitlines() if ln.strip())
        except OSError:
            raise EraseError(f"cannot read sample-id file {path}; check the path") from None
        if not text:
            raise EraseError(f"sample-id file {path} is empty; write one id per line")
    return parse_seeds(text)  # one grammar for id lists and seed lists


def parse_list(text: str | None) -> list[str]:
    """``"red, blue,"`` -> ``["red", "blue"]``."""
    return [x.strip() for x in (text or "").split(",") if x.strip()]


_FLOAT_WITHOUT_DOT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def parse_value(text: str):
    """A setting's value as YAML reads it, except that ``1e-5`` is a number (YAML 1.1 reads a
    float without a dot as a string)."""
    import yaml

    parsed = yaml.safe_load(text)
    if isinstance(parsed, str) and _FLOAT_WITHOUT_DOT.fullmatch(parsed):
        return float(parsed)
    return parsed


def parse_sets(items) -> dict:
    """``["preserve_weight=0", "loss=noise"]`` -> ``{"preserve_weight": 0, "loss": "noise"}``."""
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise EraseError(f"--set {item!r} must look like NAME=VALUE")
        out[name.strip()] = parse_value(value)
    return out


def parse_labelled(item: str, flag: str, example: str) -> tuple[str, str]:
    """``"oracle=runs/x"`` -> ``("oracle", "runs/x")``."""
    label, sep, value = item.partition("=")
    if not sep or not label.strip() or not value.strip():
        raise EraseError(f"{flag} {item!r} must look like LABEL=PATH, e.g. {flag} {example}")
    return label.strip(), value.strip()


def parse_lrs(
    items, optimizers: list[str], defaults: dict[str, tuple[float, ...]]
) -> dict[str, tuple[float, ...]]:
    """``["1e-4,3e-4", "adam=1e-3"]`` -> learning rates per optimizer (``defaults`` for the rest)."""
    grid = {o: defaults[o] for o in optimizers if o in defaults}
    for item in items:
        name, sep, values = item.rpartition("=")
        try:
            lrs = tuple(float(v) for v in values.split(",") if v.strip())
        except ValueError:
            raise EraseError(f"--lrs {item!r} must be numbers like 1e-4,3e-4 or adam=1e-4") from None
        if not lrs:
            raise EraseError(f"--lrs {item!r} names no learning rate")
        for opt in [name.strip()] if sep else optimizers:
            if opt not in optimizers:
                raise EraseError(f"--lrs names optimizer {opt!r}, which is not in --optimizers")
            grid[opt] = lrs
    return grid
