"""``erase generate``: images for prompts x seeds, a grid (rows: prompts, columns: seeds), a record."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from erase.errors import EraseError
from erase.jobs.base import JobConfig, JobResult, ModelOptions, OutOptions, option, positive, start_record


@dataclass(frozen=True, kw_only=True)
class SamplingOptions(JobConfig):
    steps: int = option(25, "sampling steps")
    guidance: float = option(7.5, "classifier-free guidance scale")
    batch_size: int = option(32, "images per pipeline call")


@dataclass(frozen=True, kw_only=True)
class GenerateJob(ModelOptions, OutOptions, SamplingOptions):
    """Generate images for prompts x seeds, and a grid."""

    COMMAND = "generate"

    prompt: tuple[str, ...] = option((), "a prompt (repeatable)", grammar="items")
    prompt_file: Path | None = option(None, "a text file with one prompt per line")
    seeds: tuple[int, ...] = option((0, 1, 2, 3), "seeds, e.g. 0,1,2 or 0-7", grammar="seeds")

    def check(self) -> None:
        super().check()
        positive(self, "steps", "batch_size")


def run(cfg: GenerateJob) -> JobResult:
    from erase import distributed
    from erase.concepts import read_prompt_list
    from erase.generate import check_prompts, generate, grid
    from erase.io import atomic_dir, write_json

    # 1. Check inputs before loading anything.
    prompts = list(cfg.prompt)
    if cfg.prompt_file:
        prompts += read_prompt_list(cfg.prompt_file)
    if not prompts:
        raise EraseError("no prompts given; pass --prompt TEXT or --prompt-file FILE")
    prompts = check_prompts(prompts)
    seeds = list(cfg.seeds)
    out = cfg.out_dir("generate", "images")
    rec = start_record(cfg, seeds)
    rec.prompts("prompts", texts=prompts, file=cfg.prompt_file)

    # 2. Load and generate.
    pipe = cfg.load()
    images = generate(
        pipe, prompts, seeds, steps=cfg.steps, guidance=cfg.guidance, batch_size=cfg.batch_size, split=True
    )
    if not distributed.is_main():
        return JobResult(None)

    # 3. Write images, grid and record, all at once.
    files = []
    with atomic_dir(out) as tmp:
        (tmp / "images").mkdir()
        for k, im in enumerate(images):
            pi, si = divmod(k, len(seeds))
            name = f"images/p{pi:03d}_s{seeds[si]}.png"
            im.save(tmp / name)
            files.append({"file": name, "prompt": prompts[pi], "seed": seeds[si]})
        grid(images, cols=len(seeds)).save(tmp / "grid.png")
        record = rec.finish({"images": files, "grid": "grid.png"}, device=str(pipe.device))
        write_json(tmp / "record.json", record)
    print(f"wrote {len(images)} images and grid.png to {out}")
    return JobResult(out, record)
