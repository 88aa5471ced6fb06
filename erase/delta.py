"""Erasure deltas: only the UNet tensors a method changed, in safetensors, with their provenance.

A delta records the fingerprint of the base model it was made from (a hash of the base UNet's
weight files, independent of the dtype it was loaded in: ``erase.models.model_fingerprint``) and
is refused on any other base. The
loader accepts ``BASE+DELTA`` wherever it accepts a model, e.g. ``toy+runs/red-esdx``.
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from erase.errors import EraseError

FORMAT = "erase-delta/1"
DELTA_NAME = "delta.safetensors"


def delta_path(spec: str | Path) -> Path:
    """A delta file, or a run folder that holds ``delta.safetensors``."""
    p = Path(spec).expanduser()
    if p.is_dir():
        p = p / DELTA_NAME
        if not p.is_file():
            raise EraseError(
                f"run folder {spec} has no {DELTA_NAME}; pass a finished erase run or a delta file"
            )
    elif not p.is_file():
        raise EraseError(f"delta {spec} does not exist; pass a delta file or a run folder")
    return p


@lru_cache(maxsize=16)
def hash_files(paths: tuple[str, ...], stamps: tuple) -> str:
    h = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 24):
                h.update(chunk)
    return h.hexdigest()


def sha256_of(path: Path) -> str:
    p = Path(path)
    st = p.stat()
    return hash_files((str(p),), ((st.st_size, st.st_mtime_ns),))


def split_spec(spec: str) -> tuple[str, Path | None]:
    """``"toy+runs/x"`` -> ``("toy", Path(".../delta.safetensors"))``; a plain spec -> ``(spec, None)``."""
    if "+" not in spec:
        return spec, None
    base, _, delta = spec.rpartition("+")
    if not base or not delta:
        raise EraseError(f"model spec {spec!r} must look like BASE+DELTA, e.g. toy+runs/red-esdx")
    return base, delta_path(delta)


def save_delta(path: Path, unet: torch.nn.Module, names: list[str], meta: dict) -> None:
    named = dict(unet.named_parameters())
    missing = [n for n in names if n not in named]
    if missing:
        raise ValueError(f"delta names parameters the UNet does not have: {missing[:3]}")
    tensors = {n: named[n].detach().to("cpu", torch.float32).contiguous() for n in names}
    save_tensors(path, tensors, meta)


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    """Write tensors already taken off a UNet as a delta (write then rename)."""
    meta = {"format": FORMAT, **meta}
    tmp = Path(path).with_name(f".{Path(path).name}.tmp")
    save_file(tensors, str(tmp), metadata={"erase": json.dumps(meta, default=str)})
    tmp.replace(path)


def read_meta(path: Path) -> dict:
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get("erase")
    except (SafetensorError, OSError) as e:
        raise EraseError(
            f"delta {path} is not a readable safetensors file ({e}); re-run the erasure"
        ) from None
    if not raw:
        raise EraseError(f"{path} is a safetensors file but not an erase delta (no metadata)")
    meta = json.loads(raw)
    if meta.get("format") != FORMAT:
        raise EraseError(f"delta {path} has format {meta.get('format')!r}; this erase reads {FORMAT}")
    return meta


def concept_of(meta: dict) -> str | None:
    """The concept a delta's edit is about: the one it erased (concept-level) or the one its forget
    set shows (data-level, when the user named it); None when it names neither."""
    concepts = meta.get("concepts") or {}
    return concepts.get("erase") or concepts.get("shows")


def delta_tensor_names(path: Path) -> list[str]:
    """The UNet parameters a delta changes (what ``--params changed`` relearns)."""
    read_meta(path)  # a readable erase delta, or one line saying what it is instead
    with safe_open(str(path), framework="pt") as f:
        return list(f.keys())


def check_base(path: Path, meta: dict, base_fingerprint: str) -> None:
    """Refuse a delta made from another base model than the one with ``base_fingerprint``."""
    if meta.get("base_fingerprint") != base_fingerprint:
        raise EraseError(
            f"delta {path} was made from model {meta.get('base_model')!r} "
            f"(fingerprint {str(meta.get('base_fingerprint'))[:12]}), not this base "
            f"({base_fingerprint[:12]}); apply it to the model it was made from"
        )


@torch.no_grad()
def apply_delta(unet: torch.nn.Module, path: Path, base_fingerprint: str) -> dict:
    """Write the delta's tensors into ``unet`` after checking it was made from this base."""
    meta = read_meta(path)
    check_base(path, meta, base_fingerprint)
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise EraseError(f"delta {path} is corrupted ({e}); re-run the erasure") from None
    named = dict(unet.named_parameters())
    for name, value in tensors.items():
        if name not in named or named[name].shape != value.shape:
            raise EraseError(f"delta {path} does not fit this UNet (parameter {name}); wrong base model")
        named[name].copy_(value.to(named[name].dtype))
    return meta
