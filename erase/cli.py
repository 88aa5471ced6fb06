"""The ``erase`` command line: options built from the job configs, nothing else.

Every command is a job (``erase.jobs``): its options are the config's fields, their help and
defaults are the config's, and the config checks the values before the job loads any model. A
mistake is one line, ``erase: error: ...``, and exit status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import types
import typing

from erase import distributed
from erase.errors import EraseError, Interrupted
from erase.jobs import JOBS
from erase.jobs.base import MISSING, cli_fields, field_default, field_types, flag, required_fields
from erase.pipeline import PipelineJob, run_pipeline

COMMANDS = {cls.COMMAND: cls for cls in [*JOBS, PipelineJob] if cls.COMMAND and cls.COMMAND != "seed003"}
ALIASES = {"untrain": ["data"]}  # `erase data`: the command's name before untraining had one word
# Commands that share their work across processes under `accelerate launch` (erase.distributed);
# any other would run whole in every process, each racing to write the same output folder.
MULTI_PROCESS = ("generate", "score", "relearn", "audit")


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage mistake in one line (no usage dump) with exit status 2."""

    def error(self, message: str):
        sys.stderr.write(f"erase: error: {message} (see `{self.prog} --help`)\n")
        sys.exit(2)


class _Help(argparse.HelpFormatter):
    """Help texts may be functions (the method list imports the method modules: only for --help)."""

    def _get_help_string(self, action):
        text = getattr(action, "lazy_help", None)
        return text() + getattr(action, "default_note", "") if text else super()._get_help_string(action)


def _default_text(f) -> str:
    from erase.specs import format_seeds

    default = field_default(f)
    if default is MISSING or default is None or default is False or default == () or default == {}:
        return ""
    if f.metadata.get("grammar") in ("seeds", "ids"):
        default = format_seeds(default)
    elif f.metadata.get("grammar") == "list":
        default = ",".join(default)
    elif isinstance(default, dict):
        return ""
    return f" (default {default})"


def add_options(p: argparse.ArgumentParser, cls) -> None:
    """One option per field of ``cls``; unset options stay out of the namespace, so the config's
    own defaults apply."""
    required, hints = set(required_fields(cls)), field_types(cls)
    for f in cli_fields(cls):
        meta, grammar = f.metadata, f.metadata.get("grammar")
        tp = hints[f.name]
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        base = args[0] if typing.get_origin(tp) in (typing.Union, types.UnionType) else tp
        kw: dict = {"dest": f.name, "default": argparse.SUPPRESS}
        if meta.get("metavar"):
            kw["metavar"] = meta["metavar"]
        if meta.get("positional"):
            action = p.add_argument(f.name, nargs="+" if typing.get_origin(base) is tuple else None)
        elif grammar == "optimizers":
            names = ",".join(f.default_factory())
            p.add_argument(
                "--optimizers", default=argparse.SUPPRESS, help=f"comma-separated (default {names})"
            )
            action = p.add_argument("--lrs", action="append", metavar="[OPT=]LR,...", **kw | {"dest": "lrs"})
        elif base is bool:
            action = p.add_argument(flag(f.name), action="store_true", **kw)
        elif grammar in ("items", "sets"):
            action = p.add_argument(flag(f.name), action="append", required=f.name in required, **kw)
        else:
            kw |= {"type": base} if base in (int, float) else {}
            kw |= {"choices": typing.get_args(base)} if typing.get_origin(base) is typing.Literal else {}
            action = p.add_argument(flag(f.name), required=f.name in required, **kw)
        help_text = meta.get("help", "")
        note = "" if meta.get("positional") or "default" in str(help_text) else _default_text(f)
        if callable(help_text):  # argparse shows an option's help only when it has some
            action.help, action.lazy_help, action.default_note = "-", help_text, note
        else:
            action.help = help_text + note


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="erase",
        description="Erase concepts from text-to-image diffusion models and show that they are gone.",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    groups: dict[str, argparse._SubParsersAction] = {}
    for name, cls in COMMANDS.items():
        first, *rest = name.split()
        about = (cls.__doc__ or "").strip().splitlines()[0]
        if rest:  # a command with subcommands: `erase toy train`
            if first not in groups:
                toy = sub.add_parser(first, help="the bundled toy world: train, retrain without, evaluate")
                groups[first] = toy.add_subparsers(dest="subcommand", required=True, parser_class=_Parser)
            p = groups[first].add_parser(rest[0], help=about, description=about, formatter_class=_Help)
        else:
            p = sub.add_parser(
                name, help=about, description=about, aliases=ALIASES.get(name, []), formatter_class=_Help
            )
        p.set_defaults(job=cls)
        add_options(p, cls)
    return parser


def config_from_args(args: argparse.Namespace):
    """The job config the parsed options describe (checked by the config itself)."""
    values = {k: v for k, v in vars(args).items() if k not in ("command", "subcommand", "job")}
    cls = args.job
    if "optimizers" in values or "lrs" in values or "lrs_from" in values:
        from erase.optim import DEFAULT_LRS
        from erase.specs import parse_list, parse_lrs

        default = next(f for f in dataclasses.fields(cls) if f.name == "optimizers").default_factory()
        names = parse_list(values.pop("optimizers", ",".join(default)))
        if not names:
            raise EraseError("--optimizers names none; pass e.g. --optimizers sgd,adam")
        for o in names:
            if o not in DEFAULT_LRS:
                raise EraseError(f"unknown optimizer {o!r}; choose from {', '.join(DEFAULT_LRS)}")
        lrs = values.pop("lrs", [])
        if values.get("lrs_from") and not lrs:
            values["optimizers"] = {o: () for o in names}  # the rates come from the sweep
        else:
            values["optimizers"] = parse_lrs(lrs, names, DEFAULT_LRS)
    if distributed.launched() and "device" in {f.name for f in dataclasses.fields(cls)}:
        values.setdefault("device", None)
    return cls(**values)


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


def _start_processes(cfg):
    """Under `accelerate launch` with several processes: start accelerate, one GPU per process."""
    if not distributed.launched():
        return cfg
    if cfg.COMMAND not in MULTI_PROCESS:
        raise EraseError(
            f"erase {cfg.COMMAND} runs in one process; launch it without accelerate (or --num_processes 1). "
            f"Commands that share work across processes: {', '.join(MULTI_PROCESS)}"
        )
    distributed.start()
    if cfg.device is None and (device := distributed.device()):
        cfg = cfg.replace(device=device)
    return cfg


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _quiet_libraries()
    try:
        cfg = _start_processes(config_from_args(args))
        if isinstance(cfg, PipelineJob):
            run_pipeline(cfg)
        else:
            JOBS[type(cfg)](cfg)
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
