"""``erase apply``: a full diffusers pipeline folder from a base model and a delta, with a model card
(README.md: what was erased, by what, with what scores and attacks; ``erase.card``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from erase.jobs.base import JobConfig, JobResult, option

USAGE = """from diffusers import DiffusionPipeline

pipe = DiffusionPipeline.from_pretrained({folder!r})  # this folder: the base with the edit applied"""


@dataclass(frozen=True, kw_only=True)
class ApplyJob(JobConfig):
    """Write a full diffusers pipeline folder from a base model and a delta."""

    COMMAND = "apply"

    delta: str = option(help="a delta file or an erase run folder", positional=True)
    out: Path = option(help="the pipeline folder to write")
    model: str | None = option(None, "base model (default: the one the delta records)")
    allow_pickle: bool = option(False, "unpickle .bin/.ckpt/.pt base weights (only files you trust)")
    overwrite: bool = option(False, "replace a non-empty output folder")


def run(cfg: ApplyJob) -> JobResult:
    from erase.card import model_card
    from erase.delta import delta_path, read_meta
    from erase.io import atomic_dir, check_writable
    from erase.models import load_pipeline

    path = delta_path(cfg.delta)
    meta = read_meta(path)
    base = cfg.model or meta["base_model"]
    check_writable(cfg.out, cfg.overwrite)
    pipe = load_pipeline(f"{base}+{path}", device="cpu", dtype="fp32", allow_pickle=cfg.allow_pickle)
    with atomic_dir(cfg.out) as tmp:
        pipe.save_pretrained(tmp, safe_serialization=True)
        usage = USAGE.format(folder=str(cfg.out))
        (tmp / "README.md").write_text(model_card(path, meta, artifact="pipeline", usage=usage))
    print(
        f"wrote {base} with {meta['method']} ({', '.join(map(str, meta['concepts'].values()))}) to {cfg.out}"
    )
    return JobResult(cfg.out, {"base_model": base, "delta": str(path)})
