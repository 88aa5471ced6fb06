"""ESD's cost: its two samplings against the authors' loop as written, at the method's defaults.

Three ways to run ESD-x on the same model, prompt and settings (the method's defaults, read from
``erase.methods.esd.Config``: trajectories, DDIM steps, batch size, eta, lr, sampling guidance):

- ``naive``: the authors' loop as written. Every iteration samples a partial guided DDIM trajectory
  with the model being trained down to a random step, asks a full frozen copy of the UNet for the
  unconditional and conditional predictions there (two calls), then takes one gradient step.
- ``fresh``: ``--set sampling=fresh`` (the same algorithm): the trajectory and the frozen
  predictions batched (one call each per step), the frozen values of the trained tensors only.
- ``bank``: ``--set sampling=bank`` (ours, a different algorithm): trajectories sampled once up
  front from the frozen model, states reused; per iteration, one gradient step.

Each (variant, iterations) runs in its own subprocess, one after the other, so that its time and
peak memory are its own. A cost model predicts every run from unit costs measured in a further
subprocess (seconds of one no-grad UNet call at each batch size used, and of one gradient step;
``COST_MODEL`` below), and is checked against the measured runs; ``--predict-px 512
--predict-iters 1000`` applies it at the paper's scale with unit costs measured at that size.

    python bench/esd_speed.py --model toy --iters 20,200 --predict-px 32 --predict-iters 1000 \
        --out bench/results/esd_speed_toy.json
    python bench/esd_speed.py --model sd15 --px 64 --iters 20 --predict-px 512 --predict-iters 1000 \
        --predict-max-batch 2 --repeats 1 --out bench/results/esd_speed_sd15.json

On ``sd15`` the UNet is the real SD 1.5 architecture (859 M parameters) built from its config with
random weights, with a text encoder of CLIP ViT-L/14's shape: no download. Timing does not depend
on the weights' values. Memory is peak resident set size on ``--device cpu`` and
``torch.cuda.max_memory_allocated`` on ``cuda``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import asdict

import torch
import torch.nn.functional as F

COST_MODEL = (
    "naive = iters * ((E + 1) * f(2) + 2 * f(1) + g); fresh = iters * (E * f(2) + f(2) + g); "
    "bank = D * f(2T) + iters * g; D DDIM steps, T trajectories, E = (D - 1) / 2 the mean stop step, "
    "f(b) one no-grad UNet call at batch b, g one gradient step at batch 1"
)
PROMPT = "a red circle"
VARIANTS = ("naive", "fresh", "bank")
SETTINGS = ("trajectories", "ddim_steps", "batch_size", "eta", "lr", "sample_guidance")


def esd_settings(args) -> dict:
    """The method's defaults (its Config, the only copy), with --ddim-steps if given."""
    from erase.methods.esd import Config

    cfg = asdict(Config())
    chosen = {k: cfg[k] for k in SETTINGS}
    if args.ddim_steps:
        chosen["ddim_steps"] = args.ddim_steps
    return chosen


def load(args, px: int):
    from common import sd15_pipeline

    from erase.models import load_pipeline

    if args.model == "sd15":
        pipe = sd15_pipeline(sample_size=px // 8).to(args.device)
    else:
        pipe = load_pipeline(args.model, device=args.device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def naive_esd(pipe, s: dict, iters: int, seed: int = 0) -> None:
    """The authors' loop: sampling with the model being trained, a full frozen copy, two calls."""
    from erase.diffusion import encode_prompts, predict, sample_trajectories
    from erase.layers import select_parameters, set_trainable

    gen = torch.Generator().manual_seed(seed)
    frozen = copy.deepcopy(pipe.unet).eval().requires_grad_(False)  # the full second UNet
    unet = pipe.unet
    c, u = encode_prompts(pipe, [PROMPT]), encode_prompts(pipe, [""])
    params = select_parameters(unet, "xattn")
    set_trainable(unet, params)
    opt = torch.optim.Adam(params.values(), lr=s["lr"])
    for _ in range(iters):
        stop = int(torch.randint(s["ddim_steps"], (1,), generator=gen))
        tr = sample_trajectories(
            pipe,
            unet,
            c,
            [u],
            steps=s["ddim_steps"],
            guidance=s["sample_guidance"],
            generator=gen,
            stop_at=stop,
        )
        x, t = tr.latents[-1], tr.timesteps[-1]
        with torch.no_grad():
            e_u = predict(frozen, x, t, u)  # two separate frozen calls, as the original
            e_c = predict(frozen, x, t, c)
        target = e_u - s["eta"] * (e_c - e_u)
        loss = F.mse_loss(predict(unet, x, t, c), target)
        opt.zero_grad()
        loss.backward()
        opt.step()


def memory(cuda: bool) -> float:
    if cuda:
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10


def run_variant(args, variant: str, iters: int) -> dict:
    from erase.methods.base import EraseInputs
    from erase.unlearn import run_method

    s = esd_settings(args)
    pipe = load(args, args.px)
    cuda = args.device.startswith("cuda")
    if cuda:  # tensors on the device only: the libraries and the host copy are not counted
        torch.cuda.reset_peak_memory_stats()
    loaded = memory(cuda)
    t0 = time.perf_counter()
    if variant == "naive":
        naive_esd(pipe, s, iters)
    else:
        overrides = s | {"steps": iters, "sampling": variant}
        run_method(pipe, "esd-x", EraseInputs(targets=(PROMPT,)), seed=0, progress=False, overrides=overrides)
    if cuda:
        torch.cuda.synchronize()
    return {
        "variant": variant,
        "iters": iters,
        "seconds": round(time.perf_counter() - t0, 3),
        "peak_mb": round(memory(cuda), 1),
        "loaded_mb": round(loaded, 1),
    }


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def unit_costs(args, px: int) -> dict:
    """Seconds of one no-grad UNet call at each batch size the variants use, and of one gradient
    step (forward, backward, Adam) on ESD-x's parameters at batch 1."""
    from erase.diffusion import encode_prompts, latent_shape, predict
    from erase.layers import select_parameters, set_trainable

    s = esd_settings(args)
    pipe = load(args, px)
    unet = pipe.unet
    c = encode_prompts(pipe, [PROMPT])
    t = torch.tensor(500)
    sizes = sorted({1, 2, 2 * s["trajectories"]})
    f, extrapolated = {}, []
    for b in sizes:
        if args.max_batch and b > args.max_batch:  # linear in the batch from the largest measured
            top = max(int(k) for k in f)
            f[str(b)] = f[str(top)] * b / top
            extrapolated.append(b)
            continue
        x = torch.randn(latent_shape(pipe, b)).to(pipe.device, unet.dtype)
        with torch.no_grad():
            f[str(b)] = timed(lambda x=x, b=b: predict(unet, x, t, c.repeat(b)), args.repeats)
    params = select_parameters(unet, "xattn")
    set_trainable(unet, params)
    opt = torch.optim.Adam(params.values(), lr=s["lr"])
    x = torch.randn(latent_shape(pipe, 1)).to(pipe.device, unet.dtype)

    def step():
        loss = predict(unet, x, t, c).float().pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    out = {"px": px, "forward": f, "gradient_step": timed(step, args.repeats)}
    return out | ({"extrapolated_batches": extrapolated} if extrapolated else {})


def predicted(costs: dict, s: dict, variant: str, iters: int) -> float:
    f, g, D, T = costs["forward"], costs["gradient_step"], s["ddim_steps"], s["trajectories"]
    mean_stop = (D - 1) / 2
    if variant == "naive":
        return iters * ((mean_stop + 1) * f["2"] + 2 * f["1"] + g)
    if variant == "fresh":
        return iters * (mean_stop * f["2"] + f["2"] + g)
    return D * f[str(2 * T)] + iters * g


def crossover(costs: dict, s: dict, variant: str) -> float:
    """Iterations from which ``bank`` is the cheaper of the two: its one-off trajectories over what
    one iteration of ``variant`` costs beyond the gradient step both take."""
    per_iteration = predicted(costs, s, variant, 1) - costs["gradient_step"]
    return s["ddim_steps"] * costs["forward"][str(2 * s["trajectories"])] / per_iteration


def derived(summary: dict) -> dict:
    """What follows from the measured runs and unit costs: ratios, predictions, crossovers."""
    s, costs, runs = summary["esd_settings"], summary["unit_costs"], summary["runs"]
    for r in runs:
        r["predicted_seconds"] = round(predicted(costs, s, r["variant"], r["iters"]), 3)
        r["prediction_error"] = round(r["predicted_seconds"] / r["seconds"] - 1, 3)
    by = {(r["variant"], r["iters"]): r for r in runs}
    summary["speed_ratios"] = {
        str(i): {
            f"naive_over_{v}": round(by[("naive", i)]["seconds"] / by[(v, i)]["seconds"], 2)
            for v in ("fresh", "bank")
            if ("naive", i) in by and (v, i) in by
        }
        for i in sorted({r["iters"] for r in runs})
    }
    summary["cost_model"] = COST_MODEL
    summary["crossover_iters"] = {v: round(crossover(costs, s, v), 1) for v in ("naive", "fresh")}
    pred = summary.get("prediction")
    if pred:
        n, big = pred["iters"], pred["unit_costs"]
        seconds = {v: predicted(big, s, v, n) for v in VARIANTS}
        pred["seconds"] = {v: round(x, 1) for v, x in seconds.items()}
        pred["naive_over_fresh"] = round(seconds["naive"] / seconds["fresh"], 2)
        pred["naive_over_bank"] = round(seconds["naive"] / seconds["bank"], 2)
        pred["crossover_iters"] = {v: round(crossover(big, s, v), 1) for v in ("naive", "fresh")}
    return summary


def child(args, *extra) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--model",
        args.model,
        "--threads",
        str(args.threads),
        "--px",
        str(args.px),
    ]
    cmd += ["--device", args.device, "--repeats", str(args.repeats)]
    cmd += ["--ddim-steps", str(args.ddim_steps)] if args.ddim_steps else []
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    out = subprocess.run([*cmd, *extra], capture_output=True, text=True, env=env, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="toy", help="toy, a diffusers folder, or sd15 (random-weight SD 1.5)")
    p.add_argument("--iters", default="20,200", help="iteration counts, comma-separated")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--ddim-steps", type=int, help="override the method's DDIM steps (recorded)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu", help="cpu (peak resident memory) or cuda (peak allocated)")
    p.add_argument("--px", type=int, default=256, help="image size of the sd15 model (latents px/8)")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats of each unit cost (median)")
    p.add_argument("--predict-px", type=int, help="also measure unit costs at this size and predict there")
    p.add_argument("--predict-iters", type=int, default=1000)
    p.add_argument(
        "--predict-max-batch",
        type=int,
        help="at --predict-px, time batches up to this and extrapolate larger ones linearly (memory, time)",
    )
    p.add_argument("--max-batch", type=int, help=argparse.SUPPRESS)
    p.add_argument("--out", help="write the JSON result here")
    p.add_argument(
        "--derive",
        help="a written result: recompute what follows from its measurements (ratios, the cost model's "
        "predictions and crossovers) and write it back; runs nothing",
    )
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.derive:
        try:
            with open(args.derive) as f:
                summary = derived(json.load(f))
        except (OSError, ValueError, KeyError) as e:
            p.exit(2, f"esd_speed.py: --derive {args.derive}: not a result of this script ({e!r})\n")
        with open(args.derive, "w") as f:
            json.dump(summary, f, indent=2)
        print(json.dumps({k: summary[k] for k in ("speed_ratios", "crossover_iters")}, indent=2))
        return
    torch.set_num_threads(args.threads)
    if args.child:  # "run:VARIANT:ITERS" or "costs:PX"
        kind, *rest = args.child.split(":")
        out = run_variant(args, rest[0], int(rest[1])) if kind == "run" else unit_costs(args, int(rest[0]))
        print(json.dumps(out))
        return
    s = esd_settings(args)
    px = args.px if args.model == "sd15" else None
    costs = child(args, "--child", f"costs:{args.px}")
    runs = []
    for iters in [int(i) for i in args.iters.split(",")]:
        for variant in args.variants.split(","):  # one after the other: two torch jobs distort both
            runs.append(child(args, "--child", f"run:{variant}:{iters}"))
            print(json.dumps(runs[-1]), flush=True)
    summary = {
        "command": " ".join(["python", "bench/esd_speed.py", *sys.argv[1:]]),
        "model": args.model,
        "px": px,
        "device": args.device,
        "threads": args.threads,
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "esd_settings": s,
        "esd_settings_from": "erase.methods.esd.Config defaults"
        + (" and --ddim-steps" if args.ddim_steps else ""),
        "prompt": PROMPT,
        "unit_costs": costs,
        "runs": runs,
    }
    if args.predict_px:
        cap = ["--max-batch", str(args.predict_max_batch)] if args.predict_max_batch else []
        big = child(args, "--child", f"costs:{args.predict_px}", *cap)
        summary["prediction"] = {"px": args.predict_px, "iters": args.predict_iters, "unit_costs": big}
    summary = derived(summary)
    print(json.dumps(summary, indent=2))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(summary, f, indent=2)


if __name__ == "__main__":
    main()
