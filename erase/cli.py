"""The ``erase`` command line: a thin layer over the library's functions.

Every command validates its input before loading a model, writes its outputs whole or not at all,
writes one JSON record, and turns a user's mistake into one line and exit status 2.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path

from erase import distributed
from erase.errors import EraseError, Interrupted

DEFAULT_EVAL_SEEDS = "1000-1007"
# Relearning learning rates per optimizer: on the toy world (all parameters, batch 4) SGD at 0.1
# wrecks the model and at 0.5 diverges; 0.03 is the largest that learns. Adam at 3e-4 is the setting
# that brought an erased circle back within 12 steps when this was first measured.
DEFAULT_LRS = {"sgd": (0.03,), "sgdm": (0.003,), "adam": (3e-4,), "adamw": (3e-4,)}
CHECKPOINT_EVERY = 50  # erase.checkpoint.DEFAULT_EVERY, without importing torch for --help


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage mistake in one line (no usage dump) with exit status 2."""

    def error(self, message: str):
        sys.stderr.write(f"erase: error: {message} (see `{self.prog} --help`)\n")
        sys.exit(2)


def parse_seeds(text: str) -> list[int]:
    """``"0,1,2"``, ``"1000-1007"`` (inclusive) or a mix: ``"0-3,10"``."""
    seeds: list[int] = []
    for part in text.split(","):
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
    if any(s < 0 for s in seeds):
        raise EraseError(f"seeds must be non-negative, got {min(seeds)}")
    return seeds


def _positive(name: str, value: float) -> None:
    if not value > 0:
        raise EraseError(f"{name} must be positive, got {value}")


def _default_out(kind: str, tag: str) -> Path:
    return Path("runs") / f"{kind}-{tag}-{time.strftime('%Y%m%d-%H%M%S')}"


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        default="toy",
        help="toy (default), a diffusers folder, or a hub id such as CompVis/stable-diffusion-v1-4",
    )
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: cuda when present)")
    p.add_argument(
        "--dtype",
        default=None,
        choices=["fp32", "fp16", "bf16"],
        help="default: bf16/fp16 on CUDA, fp32 on CPU",
    )
    _pickle_arg(p)


def _pickle_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--allow-pickle",
        action="store_true",
        help="load .bin/.ckpt/.pt model weights by unpickling them (only for files you trust: "
        "a pickle can run code); without it erase reads safetensors only",
    )


def _resume_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run from its last checkpoint (kept in OUT.partial/); "
        "give the same --out and settings",
    )
    p.add_argument(
        "--checkpoint-every",
        type=int,
        default=CHECKPOINT_EVERY,
        metavar="N",
        help=f"steps between checkpoints (default {CHECKPOINT_EVERY}); SIGTERM also writes one",
    )


def _gen_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--steps", type=int, default=25, help="sampling steps (default 25)")
    p.add_argument("--guidance", type=float, default=7.5, help="classifier-free guidance scale")
    p.add_argument("--batch-size", type=int, default=32, help="images per pipeline call")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="erase",
        description="Erase concepts from text-to-image diffusion models and show that they are gone.",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    g = sub.add_parser("generate", help="generate images for prompts x seeds, and a grid")
    _model_args(g)
    _gen_args(g)
    g.add_argument("--prompt", action="append", default=[], help="a prompt (repeatable)")
    g.add_argument("--prompt-file", help="a text file with one prompt per line")
    g.add_argument("--seeds", default="0-3", help="e.g. 0,1,2 or 0-7 (default 0-3)")
    g.add_argument("--out", type=Path, help="output folder (default runs/generate-<time>)")
    g.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")

    s = sub.add_parser("score", help="score a concept and its neighbours with a CLIP zero-shot judge")
    _model_args(s)
    _gen_args(s)
    s.add_argument("--concept", required=True, help="concept to score, e.g. red")
    s.add_argument("--against", default="", help="comma-separated concepts to score beside it")
    s.add_argument("--concepts", default="toy", help="concept file: a name under prompts/ or a YAML path")
    s.add_argument("--judge", default="toy", help="toy, an open_clip NAME:PRETRAINED, or a folder")
    s.add_argument(
        "--seeds", default=DEFAULT_EVAL_SEEDS, help=f"held-out seeds (default {DEFAULT_EVAL_SEEDS})"
    )
    s.add_argument("--out", type=Path, help="output folder (default runs/score-<concept>-<time>)")
    s.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")

    c = sub.add_parser("concept", help="erase a concept (concept-level unlearning) and score before/after")
    _model_args(c)
    c.add_argument("concept", help="concept to erase, as defined in the concept file (e.g. red, circle)")
    c.add_argument("--method", default="esd-x", help="esd-x (default), esd-x-strict, esd-u, esd-all, uce, ca")
    c.add_argument(
        "--preserve",
        default=None,
        help="comma-separated concepts to keep (default: the other concepts of its group)",
    )
    c.add_argument(
        "--anchor",
        default="default",
        help="prompt to map the concept onto; default: the concept file's anchors "
        "(the prompt without the concept); 'none' for the empty prompt",
    )
    c.add_argument("--steps", type=int, help="gradient steps (method default if omitted)")
    c.add_argument("--lr", type=float, help="learning rate (method default if omitted)")
    c.add_argument("--eta", type=float, help="ESD negative-guidance strength")
    c.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="any other method setting, e.g. --set preserve_weight=0 (repeatable)",
    )
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--concepts", default="toy", help="concept file: a name under prompts/ or a YAML path")
    c.add_argument("--judge", default="toy")
    c.add_argument("--eval-seeds", default="1000-1003", help="held-out seeds for before/after scores")
    c.add_argument("--eval-steps", type=int, default=25)
    c.add_argument("--no-score", action="store_true", help="skip before/after scoring")
    c.add_argument("--out", type=Path, help="run folder (default runs/concept-<concept>-<time>)")
    c.add_argument("--overwrite", action="store_true")
    _resume_args(c)

    d = sub.add_parser(
        "data", help="untrain specific training data (data-level) and score it against its oracle"
    )
    _model_args(d)
    d.add_argument(
        "--forget", required=True, help="a folder of images with captions, or a toy spec: toy:color=red:n=32"
    )
    d.add_argument(
        "--retain",
        default=None,
        help="a folder or toy spec (default for a toy forget set: toy:rest:n=256; none for a folder)",
    )
    d.add_argument("--method", default="hamu", help="ga, graddiff, ft, rl, salun, ieu, hamu (default)")
    d.add_argument("--steps", type=int, help="gradient steps (method default if omitted)")
    d.add_argument("--lr", type=float, help="learning rate (method default if omitted)")
    d.add_argument(
        "--set", action="append", default=[], metavar="NAME=VALUE", help="any other method setting"
    )
    d.add_argument("--seed", type=int, default=0, help="draws random subsets and every batch")
    d.add_argument(
        "--oracle",
        default="auto",
        help="auto (the cached toy oracle for this forget set), none, or a model that never saw it",
    )
    d.add_argument("--concepts", default="toy")
    d.add_argument("--judge", default="toy")
    d.add_argument("--score", default=None, help="concepts to score before/after with the judge, e.g. red")
    d.add_argument("--eval-seeds", default="1000-1003")
    d.add_argument("--out", type=Path, help="run folder (default runs/data-<method>-<time>)")
    d.add_argument("--overwrite", action="store_true")
    _resume_args(d)

    a = sub.add_parser("apply", help="write a full diffusers pipeline folder from a base model and a delta")
    a.add_argument("delta", help="a delta file or an erase run folder")
    a.add_argument("--model", default=None, help="base model (default: the one the delta records)")
    _pickle_arg(a)
    a.add_argument("--out", type=Path, required=True)
    a.add_argument("--overwrite", action="store_true")

    r = sub.add_parser("relearn", help="attack an erasure by relearning, under several optimizers")
    r.add_argument("run", help="an erase run folder (or its delta file)")
    r.add_argument("--concept", help="concept to relearn (default: the one the run erased)")
    r.add_argument("--model", default=None, help="base model (default: the one the delta records)")
    r.add_argument("--device", default=None)
    r.add_argument("--dtype", default=None, choices=["fp32", "fp16", "bf16"])
    _pickle_arg(r)
    r.add_argument("--optimizers", default="sgd,adam", help="comma-separated: sgd, sgdm, adam, adamw")
    r.add_argument(
        "--lrs",
        action="append",
        default=[],
        metavar="[OPT=]LR,...",
        help="learning rates: '1e-4,3e-4' for every optimizer, or 'adam=1e-4,3e-4' for one "
        "(repeatable; defaults: " + ", ".join(f"{k} {v[0]:g}" for k, v in DEFAULT_LRS.items()) + ")",
    )
    r.add_argument("--steps", type=int, default=100, help="budget of relearning steps (default 100)")
    r.add_argument("--eval-every", type=int, help="evaluate every k steps (default: steps / 10)")
    r.add_argument("--batch-size", type=int, default=4)
    r.add_argument(
        "--params",
        default="all",
        help="what relearning trains: all (default), xattn, xattn-kv, non-xattn, changed",
    )
    r.add_argument("--seeds", default="0,1,2", help="relearning seeds: data order and noise (default 0,1,2)")
    r.add_argument("--tau", type=float, default=0.8, help="resurgence at tau x the original's accuracy")
    r.add_argument(
        "--snr-gamma",
        type=float,
        default=None,
        help="Min-SNR loss weighting (the toy world was trained with 5); default: the plain loss",
    )
    r.add_argument("--examples", type=int, default=16, help="examples drawn by the original model")
    r.add_argument("--data", type=Path, help="a folder of images with captions instead of drawn examples")
    r.add_argument("--others", help="concepts whose damage to track (default: the rest of the group)")
    r.add_argument("--oracle", help="a model that never learned the concept: same attack, ratio reported")
    r.add_argument("--concepts", default="toy", help="concept file: a name under prompts/ or a YAML path")
    r.add_argument("--judge", default="toy")
    r.add_argument(
        "--eval-seeds", default="1000-1005", help="held-out seeds for the concept (default 1000-1005)"
    )
    r.add_argument("--other-seeds", default="1000-1001", help="held-out seeds for the other concepts")
    r.add_argument("--eval-steps", type=int, default=10, help="sampling steps of evaluation images")
    r.add_argument(
        "--save-weights",
        action="store_true",
        help="also save each optimizer x lr's relearned weights (first seed) as a delta, for `erase audit`",
    )
    r.add_argument("--out", type=Path, help="output folder (default RUN/relearn)")
    r.add_argument("--overwrite", action="store_true")
    _resume_args(r)

    u = sub.add_parser(
        "audit", help="a grid of the same prompts and seeds drawn by the base, erased and relearned models"
    )
    u.add_argument("run", help="an erase run folder (or its delta file)")
    u.add_argument("--concept", help="the erased concept (default: the one the run erased)")
    u.add_argument("--model", default=None, help="base model (default: the one the delta records)")
    u.add_argument("--device", default=None)
    u.add_argument("--dtype", default=None, choices=["fp32", "fp16", "bf16"])
    _pickle_arg(u)
    u.add_argument(
        "--delta",
        action="append",
        default=[],
        metavar="LABEL=PATH",
        help="another column: a delta of the same base (repeatable); relearned weights saved by "
        "`erase relearn --save-weights` under RUN/relearn are added by default",
    )
    u.add_argument(
        "--relearned",
        type=Path,
        help="folder of relearned weights from `erase relearn --save-weights` (default RUN/relearn)",
    )
    u.add_argument("--no-relearned", action="store_true", help="leave out relearned weights")
    u.add_argument("--seeds", default="1000-1001", help="seeds, the same in every column (default 1000-1001)")
    u.add_argument(
        "--erased-prompts", type=int, default=4, help="held-out prompts of the concept (default 4)"
    )
    u.add_argument("--neighbours", type=int, default=3, help="concepts of its group, one prompt each")
    u.add_argument("--unrelated", type=int, default=2, help="prompts from other groups")
    u.add_argument("--steps", type=int, default=25, help="sampling steps (default 25)")
    u.add_argument("--guidance", type=float, default=7.5)
    u.add_argument("--batch-size", type=int, default=32, help="images per pipeline call")
    u.add_argument("--concepts", default="toy", help="concept file: a name under prompts/ or a YAML path")
    u.add_argument("--judge", default="toy")
    u.add_argument("--no-cache", action="store_true", help="redraw every image (default: reuse cached ones)")
    u.add_argument("--out", type=Path, help="output folder (default RUN/audit)")
    u.add_argument("--overwrite", action="store_true")

    x = sub.add_parser("run", help="run the stages a pipeline file names, into one run folder with a report")
    x.add_argument("file", help="a pipeline YAML file, e.g. pipelines/toy-red.yaml")
    x.add_argument("--out", type=Path, help="run folder (default: the file's out, or runs/<name>)")
    x.add_argument("--validate", action="store_true", help="only check the file; run nothing")
    x.add_argument("--resume", action="store_true", help="skip the stages a failed run finished")
    x.add_argument("--overwrite", action="store_true", help="replace a previous run in the folder")

    m = sub.add_parser("compare", help="steps to resurgence of several relearning runs side by side")
    m.add_argument("runs", nargs="+", help="relearning folders (or erase runs holding relearn/)")
    m.add_argument("--oracle", help="the relearning folder of an oracle (a model that never learned it)")
    m.add_argument("--out", type=Path, help="also write compare.md and compare.json here")
    m.add_argument("--overwrite", action="store_true")

    toy = sub.add_parser("toy", help="the bundled toy world: train or evaluate it")
    tsub = toy.add_subparsers(dest="toy_command", required=True, parser_class=_Parser)
    t = tsub.add_parser("train", help="rebuild the toy world from nothing (about 15 minutes on 2 cores)")
    t.add_argument(
        "--out", type=Path, required=True, help="folder to write (pipeline/, clip/, manifest.json)"
    )
    t.add_argument("--seed", type=int, default=0)
    t.add_argument(
        "--exclude",
        action="append",
        default=[],
        help="leave a concept out of the UNet's data, e.g. color=red (repeatable)",
    )
    t.add_argument(
        "--exclude-ids",
        default="",
        help="sample ids to leave out of the UNet's data: 1,2,3, 10-20, or @FILE (one per line)",
    )
    t.add_argument(
        "--stages",
        default="vae,clip,unet",
        help="stages to train; the others are copied from --base (default: all)",
    )
    t.add_argument("--base", type=Path, help="toy world to take untrained stages from (default: bundled)")
    t.add_argument("--unet-steps", type=int, help="override the UNet's step count")
    t.add_argument("--threads", type=int, default=2)
    t.add_argument("--no-eval", action="store_true", help="skip the quality evaluation at the end")
    t.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")

    o = tsub.add_parser(
        "oracle", help="retrain the toy UNet without a concept or some samples: the ideal reference"
    )
    o.add_argument("--exclude", action="append", default=[], help="a concept to leave out, e.g. color=red")
    o.add_argument("--exclude-ids", default="", help="sample ids to leave out: 1,2,3, 10-20, or @FILE")
    o.add_argument("--forget", help="leave out a forget set given as for `erase data`: toy:color=red:n=32")
    o.add_argument("--seed", type=int, default=0, help="the seed `erase data` drew the forget set with")
    o.add_argument("--out", type=Path, help="folder to write (default: the oracle cache, by exclusion)")
    o.add_argument("--unet-steps", type=int, help="override the UNet's step count (tests)")
    o.add_argument("--threads", type=int, default=2)
    o.add_argument("--rebuild", action="store_true", help="train even if a cached oracle exists")

    e = tsub.add_parser("eval", help="the toy model's colour and shape accuracy per prompt")
    _model_args(e)
    e.add_argument("--judge", default="toy")
    e.add_argument("--seeds", default=DEFAULT_EVAL_SEEDS)
    e.add_argument("--steps", type=int, default=25)
    e.add_argument("--guidance", type=float, default=7.5)
    e.add_argument("--out", type=Path, help="output folder (default runs/toy-eval-<time>)")
    e.add_argument("--overwrite", action="store_true")
    return parser


# Commands -----------------------------------------------------------------------------------------
def cmd_generate(args) -> dict:
    from erase.concepts import read_prompt_list
    from erase.generate import check_prompts, generate, grid
    from erase.io import atomic_dir, check_writable, write_json
    from erase.models import load_pipeline
    from erase.record import RunRecord

    # 1. Check inputs before loading anything.
    prompts = list(args.prompt)
    if args.prompt_file:
        prompts += read_prompt_list(args.prompt_file)
    if not prompts:
        raise EraseError("no prompts given; pass --prompt TEXT or --prompt-file FILE")
    prompts = check_prompts(prompts)
    seeds = parse_seeds(args.seeds)
    _positive("--steps", args.steps)
    _positive("--batch-size", args.batch_size)
    out = args.out or _default_out("generate", "images")
    check_writable(out, args.overwrite)
    rec = RunRecord(
        "generate",
        {"model": args.model, "steps": args.steps, "guidance": args.guidance, "batch_size": args.batch_size},
        seeds,
    )
    rec.prompts("prompts", texts=prompts, file=args.prompt_file)

    # 2. Load and generate.
    pipe = load_pipeline(args.model, device=args.device, dtype=args.dtype, allow_pickle=args.allow_pickle)
    images = generate(
        pipe, prompts, seeds, steps=args.steps, guidance=args.guidance, batch_size=args.batch_size, split=True
    )
    if not distributed.is_main():
        return {}

    # 3. Write images, grid (rows: prompts, columns: seeds) and record, all at once.
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
    return record


def cmd_score(args) -> dict:
    from erase.concepts import load_concepts
    from erase.io import atomic_dir, check_writable, write_json
    from erase.models import check_judge_spec, load_judge, load_pipeline
    from erase.record import RunRecord
    from erase.score import format_table, score_concepts

    # 1. Check inputs.
    check_judge_spec(args.judge)
    book = load_concepts(args.concepts)
    target = book.get(args.concept)
    others = [book.get(c) for c in args.against.split(",") if c.strip()]
    if target.name in [c.name for c in others]:
        raise EraseError(f"concept {target.name!r} is both the target and in --against; list it once")
    seeds = parse_seeds(args.seeds)
    _positive("--steps", args.steps)
    _positive("--batch-size", args.batch_size)
    out = args.out or _default_out("score", target.name)
    check_writable(out, args.overwrite)
    concepts = [target, *others]
    rec = RunRecord(
        "score",
        {
            "model": args.model,
            "judge": args.judge,
            "concept": target.name,
            "against": [c.name for c in others],
            "steps": args.steps,
            "guidance": args.guidance,
        },
        seeds,
    )
    rec.prompts("concepts", file=book.path)
    for c in concepts:
        rec.prompts(c.name, texts=c.heldout)

    # 2. Load, generate, classify.
    pipe = load_pipeline(args.model, device=args.device, dtype=args.dtype, allow_pickle=args.allow_pickle)
    judge = load_judge(args.judge, device=args.device)
    res = score_concepts(
        pipe,
        judge,
        concepts,
        seeds=seeds,
        steps=args.steps,
        guidance=args.guidance,
        batch_size=args.batch_size,
    )
    if not distributed.is_main():  # every process holds the scores; one prints and writes them
        return res
    print(format_table(res, f"{args.model}: held-out prompts x {len(seeds)} seeds, judge {args.judge}"))

    # 3. Record.
    with atomic_dir(out) as tmp:
        write_json(tmp / "record.json", rec.finish(res, device=str(pipe.device)))
    print(f"record: {out / 'record.json'}")
    return res


def _run(args, command: str, out: Path, rec, *, stable_out: bool = False):
    """The run folder of a resumable command: its status, checkpoints and commit (``erase.checkpoint``)."""
    from erase.checkpoint import Run

    if args.resume and args.out is None and not stable_out:
        raise EraseError("--resume needs --out: the folder of the run to continue")
    if not distributed.is_main():
        # The main process owns the run folder (status, its checkpoints, the commit); the
        # others only compute their share and return before writing anything.
        return distributed.Bystander()
    return Run(
        out,
        command,
        rec.data["config"],
        resume=args.resume,
        overwrite=args.overwrite,
        every=args.checkpoint_every,
    )


def _parse_sets(items: list[str]) -> dict:
    """``["preserve_weight=0", "loss=noise"]`` -> typed values (YAML scalars)."""
    import yaml

    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise EraseError(f"--set {item!r} must look like NAME=VALUE")
        parsed = yaml.safe_load(value)
        # YAML 1.1 reads 1e-5 (no dot) as a string.
        if isinstance(parsed, str) and re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+", parsed):
            parsed = float(parsed)
        out[name.strip()] = parsed
    return out


def cmd_concept(args) -> dict:
    from erase.concepts import load_concepts
    from erase.delta import DELTA_NAME
    from erase.io import check_writable, write_json
    from erase.methods import get_method
    from erase.models import check_judge_spec, load_judge, load_pipeline
    from erase.record import RunRecord
    from erase.score import score_concepts
    from erase.unlearn import concept_inputs, is_toy_sized, run_method, write_delta

    # 1. Check inputs before loading anything.
    if not args.no_score:
        check_judge_spec(args.judge)
    book = load_concepts(args.concepts)
    target = book.get(args.concept)
    method = get_method(args.method)
    if args.preserve is None:
        keep = [book.get(label) for label in target.group.labels if label != target.label]
    else:
        keep = [book.get(c) for c in args.preserve.split(",") if c.strip()]
    if target.name in [k.name for k in keep]:
        raise EraseError(
            f"concept {target.name!r} is both erased and in --preserve; remove it from --preserve"
        )
    anchor = None if args.anchor.strip().lower() == "none" else args.anchor
    inputs = concept_inputs(target, keep, anchor)
    overrides = {"steps": args.steps, "lr": args.lr, "eta": args.eta} | _parse_sets(args.set)
    method.config(overrides)  # validates names and values now, not after loading the model
    seeds = parse_seeds(args.eval_seeds)
    _positive("--eval-steps", args.eval_steps)
    out = args.out or _default_out("concept", f"{target.name}-{method.name}")
    check_writable(out, args.overwrite)
    rec = RunRecord(
        "concept",
        {
            "model": args.model,
            "method": method.name,
            "kind": method.kind,
            "concept": target.name,
            "preserve": [k.name for k in keep],
            "anchor": args.anchor,
            "overrides": overrides,
            "judge": args.judge,
            "eval_steps": args.eval_steps,
        },
        seeds,
    )
    rec.prompts("concepts", file=book.path)
    rec.prompts("targets", texts=inputs.targets)
    rec.prompts("anchors", texts=inputs.anchors)
    rec.prompts("preserve", texts=inputs.preserve)
    run = _run(args, "concept", out, rec)

    with run:
        # 2. Load; score the base model.
        pipe = load_pipeline(args.model, device=args.device, dtype=args.dtype, allow_pickle=args.allow_pickle)
        judge = None if args.no_score else load_judge(args.judge, device=args.device)
        scored = [target, *keep]

        def score():
            return score_concepts(pipe, judge, scored, seeds=seeds, steps=args.eval_steps)

        before = None if judge is None else score()

        # 3. Erase.
        outcome = run_method(
            pipe, method.name, inputs, overrides=overrides, seed=args.seed, checkpoint=run.checkpoint
        )
        after = None if judge is None else score()

        # 4. Write the delta and the record together.
        results = {
            "method_log": {k: v for k, v in outcome.log.items() if k != "params"},
            "changed_tensors": len(outcome.params),
            "before": before,
            "after": after,
            "toy_settings": is_toy_sized(pipe),
            "config": outcome.config.__dict__,
        }
        with run.commit() as tmp:
            write_delta(
                tmp / DELTA_NAME,
                pipe,
                outcome,
                base_spec=args.model,
                seed=args.seed,
                concepts={"erase": target.name, "preserve": [k.name for k in keep]},
            )
            record = rec.finish(
                results, trainable=outcome.log.get("trainable_parameters"), device=str(pipe.device)
            )
            write_json(tmp / "record.json", record)
        print(_summary(target, keep, before, after, outcome, out))
    return record


def _summary(target, keep, before, after, outcome, out) -> str:
    lines = [
        f"{outcome.method.name} ({outcome.method.kind}) erased {target.name!r} in "
        f"{outcome.seconds:.1f} s, peak memory {outcome.peak_memory}, "
        f"{outcome.log.get('trainable_parameters')} parameters edited"
    ]
    if before is not None:
        lines.append(f"{'concept':<12} {'role':<9} {'before':>7} {'after':>7}   95% CI after")
        for c in [target, *keep]:
            b, a = before["concepts"][c.name], after["concepts"][c.name]
            role = "erased" if c is target else "kept"
            lines.append(
                f"{c.name:<12} {role:<9} {b['accuracy']:>7.2f} {a['accuracy']:>7.2f}   "
                f"[{a['ci95'][0]:.2f}, {a['ci95'][1]:.2f}]"
            )
    lines.append(f"delta and record: {out}")
    return "\n".join(lines)


def _forget_oracle(spec: str, ids: list[int]):
    """The toy oracle matching a forget set: a whole concept's (unlearning) or the ids' (untraining)."""
    from erase.toy.oracle import find_oracle, oracle_key

    parts = [x for x in spec.split(":")[1:] if x]
    concept_wide = all("=" in x and x.split("=")[0] in ("color", "shape", "style") for x in parts)
    exclude, ex_ids = (parts, []) if concept_wide and len(parts) == 1 else ([], ids)
    return find_oracle(exclude, ex_ids), oracle_key(exclude, ex_ids)


def cmd_data(args) -> dict:
    from erase.concepts import load_concepts
    from erase.data import resolve_sets, toy_ids
    from erase.delta import DELTA_NAME
    from erase.io import check_writable, write_json
    from erase.methods import get_method
    from erase.methods.base import EraseInputs
    from erase.models import check_judge_spec, load_judge, load_pipeline
    from erase.record import RunRecord
    from erase.score import score_concepts
    from erase.unlearn import run_method, write_delta
    from erase.untrain import format_report, make_probes, measure, nearest_note, oracle_kind

    # 1. Check inputs before loading a model.
    method = get_method(args.method)
    if method.kind != "untraining":
        raise EraseError(
            f"{method.name} is a concept-level (unlearning) method; use `erase concept` for it, "
            "or pick ga, graddiff, ft, rl, salun, ieu, hamu"
        )
    overrides = {"steps": args.steps, "lr": args.lr} | _parse_sets(args.set)
    method.config(overrides)
    toy_forget = args.forget.startswith("toy:")
    retain_spec = args.retain if args.retain is not None else ("toy:rest:n=256" if toy_forget else None)
    if retain_spec and retain_spec.strip().lower() == "none":
        retain_spec = None
    forget, retain = resolve_sets(args.forget, retain_spec, seed=args.seed)
    f_ids = toy_ids(args.forget, seed=args.seed) if toy_forget else []
    scored = []
    if args.score:
        check_judge_spec(args.judge)
        book = load_concepts(args.concepts)
        scored = [book.get(c) for c in args.score.split(",") if c.strip()]
    seeds = parse_seeds(args.eval_seeds)
    oracle_dir, oracle_key = None, None
    if args.oracle == "auto" and toy_forget:
        oracle_dir, oracle_key = _forget_oracle(args.forget, f_ids)
        oracle_spec = f"toy+{oracle_dir}" if oracle_dir else None
    elif args.oracle in ("auto", "none"):
        oracle_spec = None
    else:
        oracle_spec = args.oracle
    o_kind = oracle_kind(oracle_spec)
    out = args.out or _default_out("data", method.name)
    check_writable(out, args.overwrite)
    rec = RunRecord(
        "data",
        {
            "model": args.model,
            "method": method.name,
            "kind": method.kind,
            "forget": args.forget,
            "retain": retain_spec,
            "overrides": overrides,
            "oracle": oracle_spec,
            "oracle_kind": o_kind,
            "reconstructed": bool(getattr(method.module, "RECONSTRUCTED", False)),
        },
        [args.seed],
    )
    rec.prompts("forget", texts=forget.prompts)
    if retain is not None:
        rec.prompts("retain", texts=retain.prompts)
    run = _run(args, "data", out, rec)

    with run:
        # 2. Load; fixed probes; the original's and the oracle's numbers.
        pipe = load_pipeline(args.model, device=args.device, dtype=args.dtype, allow_pickle=args.allow_pickle)
        sched = pipe.scheduler
        probes = make_probes(pipe, forget, retain, seed=args.seed)
        judge = load_judge(args.judge, device=args.device) if scored else None

        def score(model):
            # The same held-out prompts and seeds for the original, the edit and the oracle.
            return (
                score_concepts(model, judge, scored, seeds=seeds, steps=10, progress=False)
                if scored
                else None
            )

        rows, scores = {}, {}
        oracle_preds = None
        if oracle_spec:
            opipe = load_pipeline(
                oracle_spec, device=args.device, dtype=args.dtype, allow_pickle=args.allow_pickle
            )
            oracle_preds = probes["forget"].predictions(opipe.unet, sched)
            rows["oracle"] = measure(opipe.unet, sched, probes, oracle_preds)
            scores["oracle"] = score(opipe)
            del opipe
        elif toy_forget and args.oracle == "auto":
            print(
                f"no oracle cached for this forget set ({oracle_key}); build it with `erase toy oracle "
                f"--forget '{args.forget}' --seed {args.seed}` (about 10 minutes) to score against the ideal"
            )
        rows["original"] = measure(pipe.unet, sched, probes, oracle_preds)
        scores["original"] = score(pipe)

        # 3. Untrain.
        inputs = EraseInputs(forget=forget, retain=retain)
        outcome = run_method(
            pipe, method.name, inputs, overrides=overrides, seed=args.seed, checkpoint=run.checkpoint
        )
        rows["edited"] = measure(pipe.unet, sched, probes, oracle_preds)
        scores["edited"] = score(pipe)
        table = format_report(
            {k: rows[k] for k in ("original", "edited", "oracle") if k in rows},
            method.kind,
            oracle_spec,
            o_kind,
        )

        # 4. Delta and record together.
        log = {k: v for k, v in outcome.log.items() if k != "params"}
        results = {
            "metrics": rows,
            "scores": scores if scored else None,
            "note": nearest_note(rows),
            "method_log": log,
            "forget_ids": f_ids,
            "probed_samples": {k: len(p.enc) for k, p in probes.items()},  # a large set: a subset
            "config": outcome.config.__dict__,
            "table": table,
        }
        with run.commit() as tmp:
            write_delta(
                tmp / DELTA_NAME,
                pipe,
                outcome,
                base_spec=args.model,
                seed=args.seed,
                concepts={"forget": args.forget, "retain": retain_spec, "forget_ids": f_ids},
            )
            write_json(
                tmp / "record.json",
                rec.finish(
                    results, trainable=outcome.log.get("trainable_parameters"), device=str(pipe.device)
                ),
            )
        print(
            f"{method.name} ({method.kind}) on {len(forget.images)} forget samples in {outcome.seconds:.1f} s, "
            f"peak memory {outcome.peak_memory}, {outcome.log.get('trainable_parameters')} parameters trained"
        )
        print(table)
        if results["note"]:
            print(results["note"])
        if "verdict" in log:
            print(f"hardness: {log['verdict']}")
        if scored:
            for c in scored:
                line = ", ".join(f"{k} {v['concepts'][c.name]['accuracy']:.2f}" for k, v in scores.items())
                print(f"{c.name} accuracy (held-out prompts): {line}")
        print(f"delta and record: {out}")
        return results


def cmd_apply(args) -> None:
    from erase.delta import delta_path, read_meta
    from erase.io import atomic_dir, check_writable
    from erase.models import load_pipeline

    path = delta_path(args.delta)
    meta = read_meta(path)
    base = args.model or meta["base_model"]
    check_writable(args.out, args.overwrite)
    pipe = load_pipeline(f"{base}+{path}", device="cpu", dtype="fp32", allow_pickle=args.allow_pickle)
    with atomic_dir(args.out) as tmp:
        pipe.save_pretrained(tmp, safe_serialization=True)
    print(
        f"wrote {base} with {meta['method']} ({', '.join(map(str, meta['concepts'].values()))}) to {args.out}"
    )


def _parse_lrs(items: list[str], optimizers: list[str]) -> dict[str, tuple[float, ...]]:
    """``["1e-4,3e-4", "adam=1e-3"]`` -> learning rates per optimizer (defaults for the rest)."""
    grid = {o: DEFAULT_LRS[o] for o in optimizers if o in DEFAULT_LRS}
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


def _relearn_folder(spec: str) -> Path:
    p = Path(spec)
    for cand in (p, p / "relearn"):
        if (cand / "relearn.json").is_file():
            return cand
    raise EraseError(f"{spec} holds no relearn.json; run `erase relearn RUN` first")


def cmd_relearn(args) -> dict:
    import torch

    from erase.concepts import load_concepts
    from erase.delta import (
        apply_delta,
        delta_path,
        delta_tensor_names,
        model_fingerprint,
        read_meta,
        save_tensors,
    )
    from erase.io import check_writable, write_json
    from erase.models import check_judge_spec, load_judge, load_pipeline
    from erase.record import RunRecord
    from erase.relearn import (
        OPTIMIZERS,
        Evaluator,
        RelearnConfig,
        attack,
        encode_examples,
        format_summary,
        generated_examples,
        load_image_folder,
        summarize,
    )
    from erase.report import plot_relearning

    # 1. Check inputs before loading anything.
    path = delta_path(args.run)
    meta = read_meta(path)
    base = args.model or meta["base_model"]
    check_judge_spec(args.judge)
    book = load_concepts(args.concepts)
    name = args.concept or meta.get("concepts", {}).get("erase")
    if not name:
        raise EraseError(
            f"{path} names no erased concept (a data-level run?); pass --concept NAME to relearn"
        )
    target = book.get(name)
    if args.others is None:
        others = [book.get(label) for label in target.group.labels if label != target.label]
    else:
        others = [book.get(c) for c in args.others.split(",") if c.strip()]
    optimizers = [o.strip() for o in args.optimizers.split(",") if o.strip()]
    for o in optimizers:
        if o not in OPTIMIZERS:
            raise EraseError(f"unknown optimizer {o!r}; choose from {', '.join(OPTIMIZERS)}")
    if not optimizers:
        raise EraseError("--optimizers names none; pass e.g. --optimizers sgd,adam")
    grid = _parse_lrs(args.lrs, optimizers)
    _positive("--steps", args.steps)
    eval_every = args.eval_every or max(1, args.steps // 10)
    configs = [
        RelearnConfig(
            optimizer=o,
            lr=lr,
            steps=args.steps,
            batch_size=args.batch_size,
            eval_every=eval_every,
            params=args.params,
            seed=seed,
            tau=args.tau,
            snr_gamma=args.snr_gamma,
        )
        for o in optimizers
        for lr in grid[o]
        for seed in parse_seeds(args.seeds)
    ]
    examples = load_image_folder(args.data) if args.data else None
    if examples is None:
        _positive("--examples", args.examples)
    eval_seeds, other_seeds = parse_seeds(args.eval_seeds), parse_seeds(args.other_seeds)
    _positive("--eval-steps", args.eval_steps)
    default_out = (Path(args.run) / "relearn") if Path(args.run).is_dir() else None
    out = args.out or default_out or _default_out("relearn", target.name)
    check_writable(out, args.overwrite)
    rec = RunRecord(
        "relearn",
        {
            "run": str(args.run),
            "delta": str(path),
            "method": meta["method"],
            "kind": meta.get("kind"),
            "base_model": base,
            "concept": target.name,
            "others": [c.name for c in others],
            "configs": [c.__dict__ for c in configs],
            "examples": "folder " + str(args.data) if args.data else f"{args.examples} drawn by the base",
            "judge": args.judge,
            "eval_steps": args.eval_steps,
            "oracle": args.oracle,
            # Each process runs (and the main one checkpoints) its share of the configs, so a
            # resume must split them the same way.
            "processes": distributed.world()[1],
        },
        eval_seeds,
    )
    rec.prompts("concepts", file=book.path)
    rec.prompts(target.name, texts=target.heldout)
    run = _run(args, "relearn", out, rec, stable_out=default_out is not None)

    with run:
        # 2. The original model: its accuracy is the bar, and it draws the relearning examples.
        pipe = load_pipeline(base, device=args.device, dtype=args.dtype, allow_pickle=args.allow_pickle)
        judge = load_judge(args.judge, device=args.device)
        evaluate = Evaluator(
            pipe, judge, target, others, seeds=eval_seeds, other_seeds=other_seeds, steps=args.eval_steps
        )
        original = evaluate()
        if examples is None:
            examples = generated_examples(pipe, target.prompts, args.examples)
        rec.prompts("relearning examples", texts=examples.prompts)
        data = encode_examples(pipe, examples)

        # 3. Apply the erasure and attack it; then the oracle, if any, with the same data and runs.
        fingerprint = model_fingerprint(base)
        apply_delta(pipe.unet, path, fingerprint)
        relearned: dict[str, tuple[dict, dict]] = {}
        first_seed = configs[0].seed

        def keep_weights(cfg, names) -> None:
            # Held in memory until the output folder is written, so a crash leaves no stray file.
            if cfg.seed != first_seed:
                return
            named = dict(pipe.unet.named_parameters())
            tensors = {n: named[n].detach().to("cpu", torch.float32).clone() for n in names}
            info = {
                "base_model": base,
                "base_fingerprint": fingerprint,
                "method": f"{meta['method']} relearned",
                "kind": meta.get("kind"),
                "concepts": meta.get("concepts", {}),
                "config": cfg.__dict__,
                "seed": cfg.seed,
                "erasure": str(path),
            }
            relearned[f"relearned-{cfg.optimizer}-lr{cfg.lr:g}.safetensors"] = (tensors, info)

        runs = attack(
            pipe,
            data,
            configs,
            evaluate,
            changed=delta_tensor_names(path),
            on_done=keep_weights if args.save_weights else None,
            checkpoint=run.checkpoint,
        )
        acc0 = original["accuracy"][target.name]
        rows = summarize(runs, target.name, acc0)
        oracle_runs, oracle_rows = [], None
        if args.oracle:
            del pipe
            opipe = load_pipeline(
                args.oracle, device=args.device, dtype=args.dtype, allow_pickle=args.allow_pickle
            )
            oracle_runs = attack(
                opipe,
                data,
                configs,
                Evaluator(
                    opipe,
                    judge,
                    target,
                    others,
                    seeds=eval_seeds,
                    other_seeds=other_seeds,
                    steps=args.eval_steps,
                ),
                checkpoint=run.checkpoint,
            )
            oracle_rows = summarize(oracle_runs, target.name, acc0)
        # Each process kept the weights of its own configs; the main one writes them all.
        relearned = dict(distributed.gather(list(relearned.items())))
        if not distributed.is_main():
            return {"runs": runs, "oracle_runs": oracle_runs}
        erased = runs[0]["curve"][0]["accuracy"][target.name]
        table = format_summary(
            rows,
            target.name,
            acc0,
            erased,
            oracle={(r["optimizer"], r["lr"]): r for r in oracle_rows} if oracle_rows else None,
        )
        print(table)

        # 4. Record, plot.
        results = {
            "concept": target.name,
            "method": meta["method"],
            "original": original,
            "summary": rows,
            "runs": runs,
            "oracle": {"model": args.oracle, "summary": oracle_rows, "runs": oracle_runs}
            if args.oracle
            else None,
            "images_per_point": evaluate.images_per_point,
            "table": table,
        }
        with run.commit() as tmp:
            plot_relearning(
                runs,
                target.name,
                original=acc0,
                erased=erased,
                tau=args.tau,
                path=tmp / "relearn.png",
                title=f"{meta['method']} on {target.name!r}: relearning on {len(examples.images)} examples",
                oracle_runs=oracle_runs,
            )
            for name, (tensors, info) in relearned.items():
                save_tensors(tmp / name, tensors, info)
            trainable = runs[0]["trainable_parameters"]
            write_json(
                tmp / "relearn.json", rec.finish(results, trainable=trainable, device=str(judge.device))
            )
        print(f"curves, table and plot: {out}")
        return results


def audit_columns(run: str, extra: list[str], relearned: Path | None):
    """Columns of an audit: the base, the run's erasure, its relearned weights, any extra deltas."""
    from erase.audit import Column
    from erase.delta import delta_path, read_meta

    path = delta_path(run)
    meta = read_meta(path)
    cols = [Column("base", None), Column(f"erased ({meta['method']})", path)]
    if relearned is not None and relearned.is_dir():
        for f in sorted(relearned.glob("relearned-*.safetensors")):
            cfg = read_meta(f).get("config", {})
            cols.append(
                Column(f"relearned {cfg.get('optimizer')} lr={cfg.get('lr'):g}, {cfg.get('steps')} steps", f)
            )
    for item in extra:
        label, sep, value = item.partition("=")
        if not sep or not label.strip() or not value.strip():
            raise EraseError(f"--delta {item!r} must look like LABEL=PATH, e.g. --delta oracle=runs/x")
        read_meta(delta_path(value.strip()))
        cols.append(Column(label.strip(), delta_path(value.strip())))
    return meta, cols


def cmd_audit(args) -> dict:
    from erase.audit import audit, audit_rows, cache_dir, presence_table, render_grid
    from erase.concepts import load_concepts
    from erase.delta import model_fingerprint
    from erase.io import atomic_dir, check_writable, write_json
    from erase.models import check_judge_spec, load_judge, load_pipeline
    from erase.record import RunRecord

    # 1. Check inputs before loading anything.
    relearned = args.relearned or (Path(args.run) / "relearn" if Path(args.run).is_dir() else None)
    if args.relearned is not None and not args.relearned.is_dir():
        raise EraseError(f"--relearned {args.relearned} is not a folder; pass the relearning output folder")
    meta, columns = audit_columns(args.run, args.delta, None if args.no_relearned else relearned)
    base = args.model or meta["base_model"]
    check_judge_spec(args.judge)
    book = load_concepts(args.concepts)
    name = args.concept or meta.get("concepts", {}).get("erase")
    if not name:
        raise EraseError(f"{args.run} names no erased concept (a data-level run?); pass --concept NAME")
    target = book.get(name)
    seeds = parse_seeds(args.seeds)
    for flag, v in [
        ("--steps", args.steps),
        ("--erased-prompts", args.erased_prompts),
        ("--batch-size", args.batch_size),
    ]:
        _positive(flag, v)
    for flag, v in [("--neighbours", args.neighbours), ("--unrelated", args.unrelated)]:
        if v < 0:
            raise EraseError(f"{flag} must be 0 or more, got {v}")
    rows = audit_rows(
        book, target, n_erased=args.erased_prompts, n_neighbours=args.neighbours, n_unrelated=args.unrelated
    )
    default_out = Path(args.run) / "audit" if Path(args.run).is_dir() else None
    out = args.out or default_out or _default_out("audit", target.name)
    check_writable(out, args.overwrite)
    rec = RunRecord(
        "audit",
        {
            "run": str(args.run),
            "base_model": base,
            "concept": target.name,
            "columns": [{"label": c.label, "delta": str(c.delta) if c.delta else None} for c in columns],
            "rows": [{"prompt": r.prompt, "role": r.role, "concept": r.concept.name} for r in rows],
            "steps": args.steps,
            "guidance": args.guidance,
            "judge": args.judge,
        },
        seeds,
    )
    rec.prompts("concepts", file=book.path)
    rec.prompts("rows", texts=[r.prompt for r in rows])

    # 2. Draw and judge every cell; one UNet, the deltas put on and taken off.
    pipe = load_pipeline(base, device=args.device, dtype=args.dtype, allow_pickle=args.allow_pickle)
    judge = load_judge(args.judge, device=args.device)
    result = audit(
        pipe,
        judge,
        rows,
        columns,
        seeds,
        base_fingerprint=model_fingerprint(base),
        steps=args.steps,
        guidance=args.guidance,
        cache=None if args.no_cache else cache_dir(),
        batch_size=args.batch_size,
        split=True,
    )
    if not distributed.is_main():  # every process holds every cell; one draws the grid and writes
        return {"cells": result["cells"]}
    table = presence_table(result["cells"], columns)
    image = render_grid(
        rows, columns, seeds, result, title=f"{meta['method']} on {target.name!r}: same prompts, same seeds"
    )

    # 3. Write the grid and the record together.
    results = {
        "presence": table,
        "cells": result["cells"],
        "drawn": result["drawn"],
        "cached": result["cached"],
    }
    with atomic_dir(out) as tmp:
        image.save(tmp / "audit.png")
        record = rec.finish(results, device=str(pipe.device))
        write_json(tmp / "audit.json", record)
    width = max(len(c.label) for c in columns)
    print(f"share of images in which the judge sees the prompt's concept ({len(seeds)} seeds):")
    print(f"{'model':<{width}}  " + "  ".join(f"{r:>9}" for r in table))
    for c in columns:
        print(
            f"{c.label:<{width}}  " + "  ".join(f"{table[r].get(c.label, float('nan')):>9.2f}" for r in table)
        )
    print(f"grid and record: {out} ({result['drawn']} images drawn, {result['cached']} from the cache)")
    return record


def cmd_run(args) -> dict:
    import json
    import shutil

    from erase.pipeline import load_pipeline_file, validate_commands

    # 1. Validate the whole file (every pipeline of a study), and every stage's command, before anything runs.
    pipeline = load_pipeline_file(args.file)
    out = args.out or pipeline.default_out()
    parts = [(sub, out / sub.head.name) for sub in pipeline.runs] if pipeline.is_study else [(pipeline, out)]
    plans = [validate_commands(sub, sub_out) for sub, sub_out in parts]
    if args.validate:
        what = (
            f"runs: {', '.join(s.head.name for s, _ in parts)}"
            if pipeline.is_study
            else f"stages: {', '.join(pipeline.names)}"
        )
        print(f"{args.file}: valid; {what}; run folder {out}")
        return {"valid": True}
    status_path = out / "pipeline.json"
    previous = json.loads(status_path.read_text()) if status_path.is_file() else None
    if out.exists() and not out.is_dir():
        raise EraseError(f"run folder {out} exists and is not a folder; choose another --out")
    if out.is_dir() and any(out.iterdir()):
        if args.overwrite:
            if previous is None:
                raise EraseError(f"{out} is not an erase run folder (no pipeline.json); choose another --out")
            shutil.rmtree(out)
        elif not (args.resume and previous is not None):
            done = previous is not None and previous.get("status") == "done"
            hint = "pass --overwrite to run it again" if done else "pass --resume to go on, or --overwrite"
            raise EraseError(f"run folder {out} already holds a {'finished ' if done else ''}run; {hint}")

    # 2. Run; a study runs its pipelines one after the other, then sums up what they show.
    t0 = time.time()
    if not pipeline.is_study:
        state = _run_stages(pipeline, out, plans[0])
    else:
        from erase.io import write_json
        from erase.report import write_study

        state = _status(pipeline, out, [(s.head.name, None) for s, _ in parts])
        for entry, (sub, sub_out), plan in zip(state["stages"], parts, plans):
            sub_state = out / sub.head.name / "pipeline.json"
            if sub_state.is_file() and json.loads(sub_state.read_text()).get("status") == "done":
                print(f"=== {sub.head.name}: done in an earlier run, skipped")
                entry["status"] = "done"
                continue
            print(f"=== {sub.head.name} ({sub.path})")
            try:
                _run_stages(sub, sub_out, plan)
            except (EraseError, KeyboardInterrupt) as e:
                state |= {"status": "failed", "reason": f"run {sub.head.name}: {e or 'interrupted'}"}
                entry["status"] = "failed"
                write_json(status_path, state)
                raise
            entry["status"] = "done"
            write_json(status_path, state)
        md = write_study(out, pipeline.head.name, [(s.head.name, o) for s, o in parts])
        state |= {"status": "done", "wall_seconds": round(time.time() - t0, 1)}
        write_json(status_path, state)
        print(md.read_text())
        print(f"study folder: {out} ({state['wall_seconds']} s)")
    return state


def _status(pipeline, out: Path, entries: list[tuple[str, list | None]]) -> dict:
    """The run's pipeline.json, created or taken up again: which stages (or runs) are done."""
    import hashlib
    import json

    from erase.io import write_json

    path = out / "pipeline.json"
    previous = json.loads(path.read_text()) if path.is_file() else {}
    finished = {s["name"] for s in previous.get("stages", []) if s.get("status") == "done"}
    text = Path(pipeline.path).read_text()
    state = {
        "name": pipeline.head.name,
        "description": pipeline.head.description,
        "file": str(pipeline.path),
        "sha256": hashlib.sha256(text.encode()).hexdigest(),
        "text": text,
        "status": "running",
        "stages": [{"name": n, "status": "done" if n in finished else "pending"} for n, _ in entries],
    }
    out.mkdir(parents=True, exist_ok=True)
    write_json(path, state)
    return state


def _run_stages(pipeline, out: Path, plan: list[tuple[str, list[str] | None]]) -> dict:
    """Run one pipeline's stages in order; outputs appear whole, pipeline.json says how far it got."""
    from erase.io import write_json
    from erase.report import write_report

    state = _status(pipeline, out, plan)
    status_path = out / "pipeline.json"
    parser = build_parser()
    t_all = time.time()
    for entry, (name, argv) in zip(state["stages"], plan):
        if entry["status"] == "done":
            print(f"== {name}: done in an earlier run, skipped")
            continue
        about = {
            "load": "the model the stages below load",
            "score": "the edit's before/after scores (in its record)",
            "report": "report.html and report.md",
            "seed003": "seed 003's logistic-regression case",
        }
        print(f"== {name}: " + (f"erase {' '.join(argv)}" if argv else about.get(name, "")))
        t0 = time.time()
        try:
            if name == "report":
                html, _ = write_report(out, title=pipeline.get("report").title)
                print(f"report: {html}")
            elif name == "seed003":
                _run_seed003(pipeline.get("seed003"), out)
            elif argv is not None:
                sub_args = parser.parse_args(argv)
                # Records keep sys.argv: make it the stage's own command, which reruns it alone.
                saved_argv, sys.argv = sys.argv, ["erase", *argv]
                try:
                    COMMANDS[sub_args.command](sub_args)
                finally:
                    sys.argv = saved_argv
        except (EraseError, KeyboardInterrupt) as e:
            entry["status"] = "failed"
            state |= {"status": "failed", "reason": f"stage {name}: {e or 'interrupted'}"}
            write_json(status_path, state)
            raise
        entry |= {"status": "done", "seconds": round(time.time() - t0, 1)}
        write_json(status_path, state)
    state |= {"status": "done", "wall_seconds": round(time.time() - t_all, 1)}
    write_json(status_path, state)
    print(f"run folder: {out} ({state['wall_seconds']} s)")
    return state


def _run_seed003(stage, out: Path) -> None:
    from erase.io import atomic_dir, write_json
    from erase.record import RunRecord
    from erase.toy.seed003 import run_case

    rec = RunRecord("seed003", {"forget": [list(f) for f in stage.forget]})
    cases = [run_case(tuple(f)) for f in stage.forget]
    for c in cases:
        if c["diverged"]:
            print(f"|F| = {c['forget']}: descent-ascent diverged; {c['diverged']}")
        else:
            print(
                f"|F| = {c['forget']}: descent-ascent ends at {c['descent_ascent']}, "
                f"{c['descent_ascent_distance']} from the retrained model vs {c['original_distance']} "
                f"for the original ({c['ratio']}x farther)"
            )
    with atomic_dir(out / "seed003") as tmp:
        write_json(tmp / "record.json", rec.finish({"cases": cases}))


def cmd_compare(args) -> dict:
    import json

    from erase.io import atomic_dir, check_writable, write_json
    from erase.relearn import format_range, format_resurgence, resurgence_ratio

    folders = [_relearn_folder(r) for r in args.runs]
    oracle = None
    if args.oracle:
        oracle = json.loads((_relearn_folder(args.oracle) / "relearn.json").read_text())["results"]
    if args.out:
        check_writable(args.out, args.overwrite)
    records = [json.loads((f / "relearn.json").read_text()) for f in folders]
    optimizers = list(dict.fromkeys(row["optimizer"] for r in records for row in r["results"]["summary"]))
    header = ["method", "concept", "original", "erased", *optimizers]
    if oracle:
        header += [f"{o} / oracle" for o in optimizers]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    table = []
    rows_out = [("oracle (" + oracle["method"] + ")", oracle)] if oracle else []
    for label, res in [(r["results"]["method"], r["results"]) for r in records] + rows_out:
        c = res["concept"]
        cells = {"method": label, "concept": c}
        cells["original"] = f"{res['original']['accuracy'][c]:.2f}"
        cells["erased"] = f"{res['runs'][0]['curve'][0]['accuracy'][c]:.2f}"
        for opt in optimizers:
            rows = [row for row in res["summary"] if row["optimizer"] == opt]
            if not rows:
                cells[opt] = cells[f"{opt} / oracle"] = "not run"
                continue
            # The attacker's best learning rate: the fewest steps (censored runs rank last).
            best = min(rows, key=lambda row: (row["median"] is None, row["median"] or 0))
            cells[opt] = (
                f"{format_resurgence(best['median'], best['budget'])} ({format_range(best)}) @ lr {best['lr']:g}"
            )
            if oracle:
                match = [o for o in oracle["summary"] if o["optimizer"] == opt and o["lr"] == best["lr"]]
                cells[f"{opt} / oracle"] = resurgence_ratio(best, match[0] if match else None)
        table.append(cells)
        lines.append("| " + " | ".join(cells.get(h, "") for h in header) + " |")
    text = "\n".join(lines)
    print("steps to resurgence: median over relearning seeds (range over seeds), at each optimizer's best lr")
    if oracle:
        print(
            "x / oracle: the same attack's steps on a model that never learned the concept; ~1 deep, << 1 hidden"
        )
    print(text)
    if args.out:
        with atomic_dir(args.out) as tmp:
            (tmp / "compare.md").write_text(text + "\n")
            write_json(
                tmp / "compare.json",
                {"runs": [str(f) for f in folders], "oracle": args.oracle, "table": table},
            )
    return {"table": table}


def _parse_ids(text: str) -> list[int]:
    from erase.data import parse_ids

    return parse_ids(text) if text else []


def cmd_toy_train(args) -> dict:
    from dataclasses import replace

    from erase.io import check_writable
    from erase.toy.train import ToyTrainConfig, train_toy

    stages = tuple(s.strip() for s in args.stages.split(",") if s.strip())
    cfg = ToyTrainConfig(
        seed=args.seed,
        stages=stages,
        exclude=tuple(args.exclude),
        exclude_ids=tuple(_parse_ids(args.exclude_ids)),
        threads=args.threads,
    )
    if args.unet_steps is not None:
        cfg = replace(cfg, unet_steps=args.unet_steps)
    from erase.toy.world import World, select

    select(World(cfg.seed, cfg.world_size), cfg.exclude, cfg.exclude_ids)  # validate before training
    check_writable(args.out, args.overwrite)
    manifest = train_toy(cfg, args.out, args.base)
    if not args.no_eval:
        from erase.io import write_json
        from erase.models import load_judge, load_pipeline
        from erase.toy.quality import markdown, toy_quality

        pipe = load_pipeline(str(args.out / "pipeline"), device="cpu")
        judge = load_judge(str(args.out / "clip"), device="cpu")
        q = toy_quality(pipe, judge, parse_seeds(DEFAULT_EVAL_SEEDS))
        q.pop("images")
        manifest["metrics"]["quality"] = q
        write_json(args.out / "manifest.json", manifest)
        print(markdown(q))
    print(f"toy world written to {args.out} in {manifest['train_seconds']:.0f} s")
    return manifest


def cmd_toy_oracle(args) -> Path:
    from erase.toy.oracle import build_oracle, find_oracle, oracle_key

    ids = _parse_ids(args.exclude_ids)
    exclude = list(args.exclude)
    if args.forget:
        from erase.data import toy_ids

        if not args.forget.startswith("toy:"):
            raise EraseError("--forget for an oracle must be a toy spec such as toy:color=red:n=32")
        _, key = _forget_oracle(args.forget, toy_ids(args.forget, seed=args.seed))
        if key.startswith("ids"):
            ids += toy_ids(args.forget, seed=args.seed)
        else:
            exclude.append(key)
    args.exclude = exclude
    key = oracle_key(args.exclude, ids)
    found = None if args.rebuild or args.out else find_oracle(args.exclude, ids)
    if found:
        print(f"oracle {key} is already built: {found} (pass --rebuild to train it again)")
        return found
    if args.unet_steps is not None:
        _positive("--unet-steps", args.unet_steps)
    out = build_oracle(args.exclude, ids, out=args.out, unet_steps=args.unet_steps, threads=args.threads)
    print(f"oracle {key} written to {out}; use it as the model toy+{out}")
    return out


def cmd_toy_eval(args) -> dict:
    from erase.generate import grid
    from erase.io import atomic_dir, check_writable, write_json
    from erase.models import load_judge, load_pipeline
    from erase.record import RunRecord
    from erase.toy.quality import markdown, toy_quality

    seeds = parse_seeds(args.seeds)
    _positive("--steps", args.steps)
    out = args.out or _default_out("toy-eval", "quality")
    check_writable(out, args.overwrite)
    rec = RunRecord(
        "toy eval",
        {"model": args.model, "judge": args.judge, "steps": args.steps, "guidance": args.guidance},
        seeds,
    )
    pipe = load_pipeline(args.model, device=args.device, dtype=args.dtype, allow_pickle=args.allow_pickle)
    judge = load_judge(args.judge, device=args.device)
    q = toy_quality(pipe, judge, seeds, steps=args.steps, guidance=args.guidance)
    images = q.pop("images")
    print(markdown(q))
    with atomic_dir(out) as tmp:
        # One row per prompt (phrasings x seeds across), for a person to check the numbers.
        grid(images, cols=len(images) // len(q["per_prompt"])).save(tmp / "grid.png")
        write_json(tmp / "record.json", rec.finish(q, device=str(pipe.device)))
    print(f"record and grid: {out}")
    return q


COMMANDS = {
    "generate": cmd_generate,
    "score": cmd_score,
    "concept": cmd_concept,
    "apply": cmd_apply,
    "relearn": cmd_relearn,
    "data": cmd_data,
    "compare": cmd_compare,
    "audit": cmd_audit,
    "run": cmd_run,
}
TOY_COMMANDS = {"train": cmd_toy_train, "eval": cmd_toy_eval, "oracle": cmd_toy_oracle}


def _quiet_libraries() -> None:
    """Library warnings (deprecations, low-memory notes) drown the one line a user needs."""
    import warnings

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning)
    try:
        from diffusers.utils import logging as dlog
        from transformers.utils import logging as tlog

        dlog.set_verbosity_error()
        tlog.set_verbosity_error()
        dlog.disable_progress_bar()  # "Loading pipeline components": noise around our own bars
        tlog.disable_progress_bar()
    except ImportError:
        pass


# Commands that share their work across processes under `accelerate launch` (erase.distributed);
# any other would run whole in every process, each racing to write the same output folder.
MULTI_PROCESS = ("generate", "score", "relearn", "audit")


def _start_processes(args) -> None:
    """Under `accelerate launch` with several processes: start accelerate, one GPU per process."""
    if not distributed.launched():
        return
    name = args.command if args.command != "toy" else f"toy {args.toy_command}"
    if name not in MULTI_PROCESS:
        raise EraseError(
            f"erase {name} runs in one process; launch it without accelerate (or --num_processes 1). "
            f"Commands that share work across processes: {', '.join(MULTI_PROCESS)}"
        )
    distributed.start()
    if getattr(args, "device", None) is None and (device := distributed.device()):
        args.device = device


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _quiet_libraries()
    try:
        _start_processes(args)
        if args.command == "toy":
            TOY_COMMANDS[args.toy_command](args)
        else:
            COMMANDS[args.command](args)
    except EraseError as e:
        sys.stderr.write(f"erase: error: {e}\n")
        return 2
    except Interrupted as e:
        sys.stderr.write(f"erase: {e}; continue with the same command and --resume\n")
        return 143  # 128 + SIGTERM, as if the signal had ended the process
    except KeyboardInterrupt:
        sys.stderr.write("erase: interrupted; nothing was written for the unfinished step\n")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
