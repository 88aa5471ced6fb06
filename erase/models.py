"""Loading: a Stable Diffusion pipeline from a model spec (judges are loaded by ``erase.judges``).

Model specs: ``toy`` (the bundled toy world), a local diffusers folder, or a hub id such as
``CompVis/stable-diffusion-v1-4``.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from pathlib import Path

import torch

from erase.delta import apply_delta, hash_files, sha256_of, split_spec
from erase.errors import EraseError
from erase.toy import WEIGHTS

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")
_PIPELINES = ("StableDiffusionPipeline", "StableDiffusionXLPipeline")
PICKLE_SUFFIXES = (".bin", ".ckpt", ".pt", ".pth")


def _unet_folder(spec: str) -> Path:
    target = resolve_model_folder(spec)
    if isinstance(target, Path):
        return target / "unet"
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(target, local_files_only=True, allow_patterns=["unet/*"])) / "unet"
    except Exception:
        raise EraseError(f"hub model {spec} is not in the local cache; download it first") from None


def model_fingerprint(spec: str) -> str:
    """sha256 of the base UNet's safetensors files; for ``BASE+DELTA``, of the base and the delta."""
    base, delta = split_spec(spec)
    if delta is not None:
        return hashlib.sha256((model_fingerprint(base) + sha256_of(delta)).encode()).hexdigest()
    folder = _unet_folder(base)
    files = sorted(str(p) for p in folder.glob("*.safetensors"))
    if not files:  # a UNet loaded with --allow-pickle: its pickle's bytes identify it as well
        files = sorted(str(p) for p in folder.glob("*") if p.suffix in PICKLE_SUFFIXES)
    if not files:
        raise EraseError(f"model {spec} has no safetensors UNet weights in {folder}")
    stamps = tuple((Path(p).stat().st_size, Path(p).stat().st_mtime_ns) for p in files)
    return hash_files(tuple(files), stamps)


def pick_device(device: str | None = None, dtype: str | None = None) -> tuple[torch.device, torch.dtype]:
    """CUDA in half precision when present (bf16 where supported), else CPU in fp32.

    Either choice can be forced: ``device="cpu"``, ``dtype="fp32"``.
    """
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise EraseError(f"unknown device {device!r}; use cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise EraseError(f"device {device} asked for, but CUDA is not available; use --device cpu")
    names = {
        "fp32": torch.float32,
        "float32": torch.float32,
        "fp16": torch.float16,
        "float16": torch.float16,
        "bf16": torch.bfloat16,
        "bfloat16": torch.bfloat16,
    }
    if dtype is None:
        if dev.type == "cuda":
            dt = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        else:
            dt = torch.float32
    elif dtype in names:
        dt = names[dtype]
    else:
        raise EraseError(f"unknown dtype {dtype!r}; use one of fp32, fp16, bf16")
    return dev, dt


def resolve_model_folder(spec: str) -> Path | str:
    """Where ``spec`` points: a local folder (checked) or a hub id (returned as is)."""
    spec = spec.strip()
    if not spec:
        raise EraseError("the model spec is empty; use toy, a diffusers folder, or a hub id")
    if spec == "toy":
        folder = WEIGHTS / "pipeline"
        if not (folder / "model_index.json").is_file():
            raise EraseError(
                f"the bundled toy model is missing from {folder}; "
                "reinstall erase or rebuild it with `erase toy train --out ...`"
            )
        return folder
    path = Path(spec).expanduser()
    if path.exists():
        if not path.is_dir():
            raise EraseError(f"model {spec} is a file; pass the diffusers folder that holds model_index.json")
        if not (path / "model_index.json").is_file():
            raise EraseError(
                f"model folder {spec} is not a diffusers pipeline (no model_index.json); "
                "save it with pipeline.save_pretrained() or pass another folder"
            )
        check_complete(path)
        return path
    if spec.startswith((".", "/", "~")) or not _HUB_ID.match(spec):
        raise EraseError(
            f"model {spec!r} is neither a folder that exists nor a hub id like "
            "CompVis/stable-diffusion-v1-4; check the path, or use toy"
        )
    return spec


_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".pt", ".pth", ".msgpack", ".onnx")


def check_complete(folder: Path) -> None:
    """Refuse a diffusers folder that an interrupted download or copy left incomplete: a partial
    file (``*.incomplete``, the hub's name while downloading), a component with a config but no
    weights, a shard its index names that is missing, or a safetensors file cut short. Only
    headers are read, so this costs milliseconds even for Stable Diffusion."""
    from safetensors import SafetensorError, safe_open

    def broken(what: str) -> EraseError:
        return EraseError(
            f"{what}: the download or copy of {folder} was interrupted; re-download the model "
            "(huggingface-cli download, or copy the folder again)"
        )

    try:
        index = json.loads((folder / "model_index.json").read_text())
    except (OSError, ValueError):
        raise broken(f"{folder / 'model_index.json'} is not readable JSON") from None
    for name, value in sorted(index.items()):
        sub = folder / name
        # Components listed as [null, null] (a removed safety checker) have nothing to load.
        if name.startswith("_") or not isinstance(value, list) or value[0] is None or not sub.is_dir():
            continue
        partial = sorted(sub.glob("*.incomplete"))
        if partial:
            raise broken(f"{sub} holds a partial file {partial[0].name}")
        if (sub / "config.json").is_file() and not any(f.suffix in _WEIGHT_SUFFIXES for f in sub.iterdir()):
            raise broken(f"{sub} has a config.json but no weights")
        for idx in sorted(sub.glob("*.index.json")):
            try:
                shards = set(json.loads(idx.read_text())["weight_map"].values())
            except (OSError, ValueError, KeyError, AttributeError):
                raise broken(f"{idx} is not a readable shard index") from None
            missing = sorted(s for s in shards if not (sub / s).is_file())
            if missing:
                raise broken(f"{sub} lacks the shard {missing[0]} that {idx.name} names")
        for f in sorted(sub.glob("*.safetensors")):
            try:
                with safe_open(str(f), framework="pt"):
                    pass
            except (SafetensorError, OSError) as e:
                raise broken(f"{f} is cut short or damaged ({e})") from None


def load_pipeline(
    spec: str = "toy", *, device: str | None = None, dtype: str | None = None, allow_pickle: bool = False
):
    """Load a Stable Diffusion (1.x, 2.x) or SDXL pipeline in diffusers format.

    ``BASE+DELTA`` loads the base and applies an erasure delta (a delta file or a run folder),
    after checking that the delta was made from that base. Weights are read from safetensors
    only: unpickling a checkpoint can run any code it holds, so a folder whose weights are
    ``.bin``/``.ckpt``/``.pt`` files is refused unless ``allow_pickle`` (``--allow-pickle``).
    """

    base, delta = split_spec(spec)
    pipe = _load_base(base, device=device, dtype=dtype, allow_pickle=allow_pickle)
    if delta is not None:
        apply_delta(pipe.unet, delta, model_fingerprint(base))
    return pipe


def pickled_weights(folder: Path) -> list[Path]:
    """Weight files of a diffusers folder that only a pickle holds: its components' ``.bin``,
    ``.ckpt``, ``.pt`` or ``.pth`` files, in those components that have no ``.safetensors``."""
    folder = Path(folder)
    index = json.loads((folder / "model_index.json").read_text())
    found = []
    for name, value in sorted(index.items()):
        sub = folder / name
        if name.startswith("_") or not isinstance(value, list) or not sub.is_dir():
            continue
        if not any(sub.glob("*.safetensors")):
            found += sorted(f for f in sub.iterdir() if f.suffix in PICKLE_SUFFIXES)
    return found


def _load_base(spec: str, *, device: str | None, dtype: str | None, allow_pickle: bool = False):
    from diffusers import DiffusionPipeline
    from diffusers.utils import logging as dlog

    target = resolve_model_folder(spec)
    dev, dt = pick_device(device, dtype)
    if isinstance(target, Path):
        cls = json.loads((target / "model_index.json").read_text()).get("_class_name", "")
        if cls not in _PIPELINES:
            raise EraseError(
                f"model {spec} is a {cls or 'unknown'} pipeline; erase works on {' and '.join(_PIPELINES)}"
            )
        pickled = pickled_weights(target)
        if pickled and not allow_pickle:
            raise EraseError(
                f"model {spec} holds pickled weights ({pickled[0].relative_to(target)}), which erase does "
                "not load: save them as safetensors, or pass --allow-pickle to unpickle them "
                "(only for files you trust: unpickling can run code)"
            )
        for f in pickled:
            sys.stderr.write(f"erase: unpickling {f} (--allow-pickle)\n")
    verbosity = dlog.get_verbosity()
    dlog.set_verbosity_error()  # diffusers' progress noise; real problems still raise
    try:
        # None lets diffusers fall back to pickles when there are no safetensors (hub ids too).
        pipe = DiffusionPipeline.from_pretrained(
            str(target), dtype=dt, use_safetensors=None if allow_pickle else True
        )
    except EraseError:
        raise
    except Exception as e:  # from_pretrained raises OSError, ValueError, HF errors...
        msg = str(e).splitlines()[0] if str(e) else e.__class__.__name__
        if isinstance(target, str):
            hint = (
                "; it may have no safetensors weights: pass --allow-pickle to unpickle them "
                "(only for files you trust)"
                if "safetensors" in msg.lower() and not allow_pickle
                else ""
            )
            raise EraseError(
                f"could not load hub model {spec} ({msg}); with no network, download it "
                f"first (huggingface-cli download) or pass a local diffusers folder{hint}"
            ) from None
        raise EraseError(
            f"could not load model folder {spec} ({msg}); it must hold safetensors weights saved by diffusers"
        ) from None
    finally:
        dlog.set_verbosity(verbosity)
    if type(pipe).__name__ not in _PIPELINES:
        raise EraseError(
            f"model {spec} loaded as {type(pipe).__name__}; erase works on {' and '.join(_PIPELINES)}"
        )
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(dev)
