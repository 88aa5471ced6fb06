"""``erase attack``: attack an erasure with the registered attacks (``erase.attacks``), each one
calibrated: the same attack, seed and examples on the erased model, on the base model (it must
bring the concept out there) and on the unlearning oracle (what it brings out of a model that never
learned the concept). ``erase relearn`` is the relearning attack, with its own curves and budgets.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from erase.attacks import get_attack
from erase.jobs.base import (
    FieldError,
    JobResult,
    JudgeOptions,
    ModelOptions,
    OutOptions,
    option,
    positive,
    start_record,
)
from erase.seeds import eval_image_seeds, split_of


def _attack_help() -> str:
    from erase.attacks import names

    return f"comma-separated attacks: {', '.join(names())}"


@dataclass(frozen=True, kw_only=True)
class AttackJob(ModelOptions, JudgeOptions, OutOptions):
    """Attack an erasure (concept inversion, ...), calibrated on the base model and the oracle."""

    COMMAND = "attack"

    run: str = option(help="an erase run folder (or its delta file)", positional=True)
    attack: tuple[str, ...] = option(("inversion",), _attack_help, grammar="list")
    concept: str | None = option(None, "concept to bring back (default: the one the run erased)")
    model: str | None = option(None, "base model (default: the one the delta records)")
    set: dict = option(
        {},
        "an attack setting, for every attack that has it (--set steps=100) or for one "
        "(--set inversion.steps=100); repeatable",
        grammar="sets",
        metavar="NAME=VALUE",
    )
    seed: int = option(0, "seed of the attack: its data order and noise")
    examples: int = option(16, "images of the concept the attacker has, drawn by the original model")
    data: Path | None = option(None, "a folder of images with captions instead of drawn examples")
    oracle: str = option(
        "auto",
        "a model that never learned the concept, attacked the same way: a model "
        "(toy+erase/toy/oracles/color=red) or an edit of the base (run folder or delta); 'auto': the "
        "toy world's oracle for the concept when there is one; 'none': uncalibrated",
    )
    no_base: bool = option(False, "do not attack the base model (whose result says the attack works)")
    calibration: Path | None = option(
        None,
        "an earlier `erase attack` folder whose base-model and oracle results are reused instead of "
        "attacking those models again: they must come from the very same attacks (base model, oracle, "
        "concept, seed, examples, evaluation seeds and steps, judge and every attack's settings; "
        "checked, a difference refused). Calibrate once, attack many erasures of the same concept",
    )
    eval_seeds: tuple[int, ...] = option(
        eval_image_seeds(6), "held-out seeds of the images drawn from what the attack found", grammar="seeds"
    )
    eval_steps: int = option(10, "sampling steps of those images")

    def check(self) -> None:
        super().check()
        positive(self, "examples", "eval_steps")
        if self.seed < 0:
            raise FieldError("seed", f"must be non-negative, got {self.seed}")
        if not self.attack:
            raise FieldError("attack", f"names none; pass e.g. --attack inversion ({_attack_help()})")
        if not self.oracle.strip():
            raise FieldError("oracle", "is empty; pass a model, a run folder, 'auto' or 'none'")
        self.settings(toy=False)  # names and types checked now, not after the model loads

    def settings(self, *, toy: bool) -> dict:
        """Each attack's config: its defaults (the toy world's on a toy-sized model) and ``set``."""

        chosen = {name: get_attack(name) for name in self.attack}
        mine = {name: {} for name in chosen}
        for key, value in self.set.items():
            name, _, field = key.rpartition(".")
            if name and name not in chosen:
                raise FieldError("set", f"{key}: {name!r} is not among --attack ({', '.join(chosen)})")
            owners = [name] if name else [n for n in chosen if field in chosen[n].settings]
            if not owners:
                raise FieldError("set", f"no attack of {', '.join(chosen)} has a setting {field!r}")
            for owner in owners:
                mine[owner][field] = value
        return {name: attack.config(mine[name], toy=toy) for name, attack in chosen.items()}

    def check_target(self, target) -> None:
        """Each attack's own checks against the concept (inversion: not its own word as the init),
        under both the toy world's settings and the source's, before a model loads."""

        for toy in (False, True):
            for name, acfg in self.settings(toy=toy).items():
                check = getattr(get_attack(name).module, "check", None)
                if check is not None:
                    check(acfg, target)


def run(cfg: AttackJob) -> JobResult:
    from erase.delta import apply_delta, delta_path, read_meta
    from erase.io import atomic_dir, write_json
    from erase.jobs.relearn import find_oracle_for
    from erase.models import model_fingerprint
    from erase.relearn import generated_examples, load_image_folder
    from erase.unlearn import is_toy_sized

    # 1. Check inputs before loading anything.
    path = delta_path(cfg.run)
    meta = read_meta(path)
    book, target = cfg.erased_concept(meta, path)
    cfg.check_target(target)
    base = cfg.model or meta["base_model"]
    oracle = find_oracle_for(cfg, meta, target)
    if oracle is not None and Path(oracle).suffix == ".safetensors" and not Path(oracle).is_file():
        raise FieldError("oracle", f"{oracle} does not exist; pass an edit of the base, a model, or 'none'")
    if oracle is not None and (Path(oracle).is_dir() or Path(oracle).suffix == ".safetensors"):
        oracle = f"{base}+{oracle}"  # an edit of the same base
    calib = _calibration(cfg, base, oracle, target) if cfg.calibration else None
    examples = load_image_folder(cfg.data) if cfg.data else None
    out = cfg.out_dir("attack", target.name, (Path(cfg.run) / "attack") if Path(cfg.run).is_dir() else None)
    rec = start_record(
        cfg,
        cfg.eval_seeds,
        delta=str(path),
        method=meta["method"],
        base_model=base,
        oracle_model=oracle,
        seed_split={"images": split_of(cfg.eval_seeds), "attack": split_of([cfg.seed], "relearn")},
    )
    rec.prompts("concepts", file=book.path)
    rec.prompts(target.name, texts=target.heldout)

    # 2. The original model draws the attacker's examples; then each model is attacked in turn.
    pipe = cfg.load(base)
    judge = cfg.load_judge(cfg.judge)
    settings = cfg.settings(toy=is_toy_sized(pipe))
    if examples is None:
        examples = generated_examples(pipe, target.prompts, cfg.examples, seed=cfg.seed)
    rec.prompts("attack examples", texts=examples.prompts)
    models = ([] if cfg.no_base else [("base", base)]) + [("erased", f"{base}+{path}")]
    models += [("oracle", oracle)] if oracle else []
    if calib is not None:
        _same_settings(cfg, calib, settings)
    with atomic_dir(out) as tmp:
        found = {}
        for label, spec in models:
            if calib is not None and label != "erased":  # reused: what the earlier run found and drew
                for attack in settings:
                    found[(attack, label)] = _reused(cfg.calibration, calib, attack, label, tmp)
                continue
            if label == "erased":
                apply_delta(pipe.unet, path, model_fingerprint(base))  # the base, loaded once
            elif label == "oracle":
                pipe = None  # freed before the oracle loads
                pipe = cfg.load(spec)
            for attack, acfg in settings.items():
                # An attack that reads only the text encoders found on the base model what it would
                # find on the erased one (the same pipeline, only its UNet edited): not searched again.
                same = label == "erased" and not getattr(get_attack(attack).module, "READS_UNET", True)
                found[(attack, label)] = _attack_one(
                    cfg,
                    pipe,
                    judge,
                    target,
                    examples,
                    attack,
                    acfg,
                    tmp,
                    label,
                    reuse=found.get((attack, "base")) if same else None,
                )
        results = _results(cfg, target, settings, found, models, meta)
        print(results["table"])
        trainable = sum(found[k]["budget"].get("trainable_parameters", 0) for k in found if k[1] == "erased")
        record = rec.finish(results, trainable=trainable, device=str(judge.device))
        write_json(tmp / "attack.json", record)
    print(f"what each attack found, images and record: {out}")
    return JobResult(out, record)


def _calibration(cfg: AttackJob, base: str, oracle: str | None, target) -> dict:
    """The earlier record whose base-model and oracle results this run reuses, checked (all but the
    attacks' settings, which need the model's size) before anything loads."""
    import json

    path = Path(cfg.calibration) / "attack.json"
    try:
        record = json.loads(path.read_text())
        res, old = record["results"], record["config"]
    except (OSError, ValueError, KeyError):
        raise FieldError(
            "calibration", f"{path} is not an `erase attack` record; pass its output folder"
        ) from None
    mine = {
        "base model": (base, old.get("base_model")),
        "oracle": (oracle, old.get("oracle_model")),
        "concept": (target.name, res.get("concept")),
        "seed": (cfg.seed, old.get("seed")),
        "examples": (cfg.examples, old.get("examples")),
        "data": (str(cfg.data) if cfg.data else None, old.get("data")),
        "eval seeds": (list(cfg.eval_seeds), old.get("eval_seeds")),
        "eval steps": (cfg.eval_steps, old.get("eval_steps")),
        "judge": (cfg.judge, old.get("judge")),
        "neutral label": (cfg.neutral, old.get("neutral")),
        "dtype": (cfg.dtype, old.get("dtype")),
        "concept file": (cfg.concepts, old.get("concepts")),
    }
    for what, (now, then) in mine.items():
        if now != then:
            raise FieldError(
                "calibration", f"{cfg.calibration} was made with {what} {then!r}, this run has {now!r}"
            )
    rows = {r["attack"]: r for r in res["attacks"]}
    wanted = ([] if cfg.no_base else ["base"]) + (["oracle"] if oracle else [])
    for name in cfg.attack:
        missing = [m for m in wanted if m not in rows.get(name, {})]
        if missing:
            raise FieldError("calibration", f"{cfg.calibration} has no {name} run on the {missing[0]} model")
    return rows


def _same_settings(cfg: AttackJob, calib: dict, settings: dict) -> None:
    from dataclasses import asdict

    for name, acfg in settings.items():
        then = calib[name]["config"]
        diff = sorted(k for k, v in asdict(acfg).items() if then.get(k) != v)
        if diff:
            raise FieldError(
                "calibration",
                f"{cfg.calibration} ran {name} with {diff[0]}={then.get(diff[0])!r}, this run with "
                f"{getattr(acfg, diff[0])!r}; attack again without --calibration or with the same settings",
            )


def _reused(folder: Path, calib: dict, attack: str, label: str, tmp: Path) -> dict:
    """An earlier run's result on one model, its files copied into this run's folder."""
    import shutil

    src = Path(folder) / attack / label
    if src.is_dir():
        shutil.copytree(src, tmp / attack / label)
    return calib[attack][label] | {"calibration": str(folder)}


def _attack_one(
    cfg, pipe, judge, target, examples, attack: str, acfg, tmp: Path, label: str, reuse: dict | None = None
) -> dict:
    """One attack on one model: what it found (or, with ``reuse``, what it found on the base model),
    its success on the evaluation seeds, a grid."""
    from erase.attacks.api import from_the_start, success
    from erase.generate import grid

    module = get_attack(attack).module
    where = tmp / attack / label
    if reuse is None:
        found = module.run(pipe, examples, target, acfg, seed=cfg.seed, out=where)
    else:
        where.mkdir(parents=True, exist_ok=True)
        drop = ("success", "images", "start", "calibration")
        found = {k: v for k, v in reuse.items() if k not in drop} | {"found_on": "base"}
    kept = {k: v for k, v in found.items() if not k.startswith("_")}  # "_": in memory only (weights)
    if found.get("diverged"):  # nothing to draw from: the row's outcome is "diverged"
        return kept | {"success": None}
    res = success(pipe, judge, target, module, found, seeds=cfg.eval_seeds, steps=cfg.eval_steps)
    images = res.pop("images")
    grid(images, cols=len(cfg.eval_seeds)).save(where / "images.png")
    found = kept
    for key in ("embedding",):
        if key in found:
            found[key] = str(Path(found[key]).relative_to(tmp))  # where it lands in the run folder
    found |= {"success": res, "images": str((where / "images.png").relative_to(tmp))}
    if label != "base":
        return found
    begin = from_the_start(pipe, judge, target, module, acfg, seeds=cfg.eval_seeds, steps=cfg.eval_steps)
    if begin is not None:  # what the attack's own starting point draws
        grid(begin["success"].pop("images"), cols=len(cfg.eval_seeds)).save(where / "start.png")
        found["start"] = begin | {"images": str((where / "start.png").relative_to(tmp))}
    return found


def _results(cfg, target, settings: dict, found: dict, models, meta: dict) -> dict:
    from dataclasses import asdict

    from erase.attacks.api import controls_of, read, shown
    from erase.report.console import markdown_table

    rows = []
    erased = {attack: found[(attack, "erased")]["success"] for attack in settings}
    for attack, acfg in settings.items():
        runs = {label: found[(attack, label)] for label, _ in models}
        v = read(attack, runs, controls_of(attack, erased))
        rows.append(
            {"attack": attack, "config": asdict(acfg)}
            | {label: found[(attack, label)] for label, _ in models}
            | {"verdict": v}
        )
    body = [
        [
            r["attack"],
            shown(r.get("base", {}).get("start", {}).get("success")),
            shown(r.get("base", {}).get("success")),
            shown(r["erased"]["success"]),
            shown(r.get("oracle", {}).get("success")),
            f"{r['verdict']['outcome']}: {r['verdict']['why']}",
        ]
        for r in rows
    ]
    header = ["attack", "untrained, base", "base model", f"erased ({meta['method']})", "oracle", "verdict"]
    table = f"attacks on {target.name!r} (images in which the judge sees it, 95% CI)\n"
    return {
        "concept": target.name,
        "method": meta["method"],
        "models": {label: spec for label, spec in models},
        "attacks": rows,
        "table": table + markdown_table(header, body),
    }
