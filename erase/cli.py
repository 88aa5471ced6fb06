"""The ``erase`` command line: a thin layer over the library's functions.

Every command validates its input before loading a model, writes its outputs whole or not at all,
writes one JSON record, and turns a user's mistake into one line and exit status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from erase.errors import EraseError

DEFAULT_EVAL_SEEDS = "1000-1007"


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

    a = sub.add_parser("apply", help="write a full diffusers pipeline folder from a base model and a delta")
    a.add_argument("delta", help="a delta file or an erase run folder")
    a.add_argument("--model", default=None, help="base model (default: the one the delta records)")
    a.add_argument("--out", type=Path, required=True)
    a.add_argument("--overwrite", action="store_true")

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
    pipe = load_pipeline(args.model, device=args.device, dtype=args.dtype)
    images = generate(
        pipe, prompts, seeds, steps=args.steps, guidance=args.guidance, batch_size=args.batch_size
    )

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
    pipe = load_pipeline(args.model, device=args.device, dtype=args.dtype)
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
    print(format_table(res, f"{args.model}: held-out prompts x {len(seeds)} seeds, judge {args.judge}"))

    # 3. Record.
    with atomic_dir(out) as tmp:
        write_json(tmp / "record.json", rec.finish(res, device=str(pipe.device)))
    print(f"record: {out / 'record.json'}")
    return res


def _parse_sets(items: list[str]) -> dict:
    """``["preserve_weight=0", "loss=noise"]`` -> typed values (YAML scalars)."""
    import yaml

    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise EraseError(f"--set {item!r} must look like NAME=VALUE")
        out[name.strip()] = yaml.safe_load(value)
    return out


def cmd_concept(args) -> dict:
    from erase.concepts import load_concepts
    from erase.delta import DELTA_NAME
    from erase.io import atomic_dir, check_writable, write_json
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

    # 2. Load; score the base model.
    pipe = load_pipeline(args.model, device=args.device, dtype=args.dtype)
    judge = None if args.no_score else load_judge(args.judge, device=args.device)
    scored = [target, *keep]

    def score():
        return score_concepts(pipe, judge, scored, seeds=seeds, steps=args.eval_steps)

    before = None if judge is None else score()

    # 3. Erase.
    outcome = run_method(pipe, method.name, inputs, overrides=overrides, seed=args.seed)
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
    with atomic_dir(out) as tmp:
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


def cmd_apply(args) -> None:
    from erase.delta import delta_path, read_meta
    from erase.io import atomic_dir, check_writable
    from erase.models import load_pipeline

    path = delta_path(args.delta)
    meta = read_meta(path)
    base = args.model or meta["base_model"]
    check_writable(args.out, args.overwrite)
    pipe = load_pipeline(f"{base}+{path}", device="cpu", dtype="fp32")
    with atomic_dir(args.out) as tmp:
        pipe.save_pretrained(tmp, safe_serialization=True)
    print(
        f"wrote {base} with {meta['method']} ({', '.join(map(str, meta['concepts'].values()))}) to {args.out}"
    )


def _parse_ids(text: str) -> list[int]:
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
    return parse_seeds(text)


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
    pipe = load_pipeline(args.model, device=args.device, dtype=args.dtype)
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


COMMANDS = {"generate": cmd_generate, "score": cmd_score, "concept": cmd_concept, "apply": cmd_apply}
TOY_COMMANDS = {"train": cmd_toy_train, "eval": cmd_toy_eval}


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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _quiet_libraries()
    try:
        if args.command == "toy":
            TOY_COMMANDS[args.toy_command](args)
        else:
            COMMANDS[args.command](args)
    except EraseError as e:
        sys.stderr.write(f"erase: error: {e}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("erase: interrupted; nothing was written for the unfinished step\n")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
