"""ESD: this implementation against a faithful naive one, same iterations, same model, one script.

Naive ESD (as in the authors' code): every iteration samples a fresh partial DDIM trajectory of the
concept with guidance down to a random step, then asks a full frozen copy of the UNet for the
unconditional and conditional predictions there (two calls), then takes one gradient step.
Ours (erase/methods/esd.py): trajectories sampled once up front, frozen predictions recorded by
the same batched call that steps the sampler, no UNet copy.

Each variant runs in its own subprocess so that its peak resident memory is its own. Reported:
time ratio and peak-memory ratio (ours / naive), and the ratio of what each adds to the
process's memory after the pipeline is loaded. Memory is peak resident set size on ``--device cpu``
and ``torch.cuda.max_memory_allocated`` on ``cuda`` (not yet run on a GPU here).

    python bench/esd_speed.py --model toy --iters 100
    python bench/esd_speed.py --model sd15 --px 128 --iters 20 --ddim-steps 25 --low-memory   # SD 1.5, ~12 min
    python bench/esd_speed.py --model sd15 --px 512 --iters 50 --low-memory --device cuda   # on a GPU

On ``sd15`` the UNet is the real SD 1.5 architecture (859 M parameters) built from its config with
random weights at 256 px (32x32 latents), with a text encoder of CLIP ViT-L/14's shape: no
download. Timing does not depend on the weights' values.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import resource
import subprocess
import sys
import time

import torch
import torch.nn.functional as F


def naive_esd(pipe, prompt: str, *, iters: int, ddim_steps: int, eta: float, lr: float, seed: int):
    from erase.diffusion import encode_prompts, predict, sample_trajectories
    from erase.layers import select_parameters, set_trainable

    gen = torch.Generator().manual_seed(seed)
    frozen = copy.deepcopy(pipe.unet).eval().requires_grad_(False)  # the full second UNet
    unet = pipe.unet
    c, u = encode_prompts(pipe, [prompt]), encode_prompts(pipe, [""])
    params = select_parameters(unet, "xattn")
    set_trainable(unet, params)
    opt = torch.optim.Adam(params.values(), lr=lr)
    for _ in range(iters):
        stop = int(torch.randint(ddim_steps, (1,), generator=gen))
        tr = sample_trajectories(
            pipe, frozen, c, [u], steps=ddim_steps, guidance=3.0, generator=gen, stop_at=stop
        )
        x, t = tr.latents[-1], tr.timesteps[-1]
        with torch.no_grad():
            e_u = predict(frozen, x, t, u)  # two separate frozen calls, as the original
            e_c = predict(frozen, x, t, c)
        target = e_u - eta * (e_c - e_u)
        loss = F.mse_loss(predict(unet, x, t, c), target)
        opt.zero_grad()
        loss.backward()
        opt.step()


def run_variant(args) -> dict:
    torch.set_num_threads(args.threads)
    from common import sd15_pipeline

    from erase.methods.base import EraseInputs
    from erase.models import load_pipeline
    from erase.unlearn import run_method

    if args.model == "sd15":
        pipe = sd15_pipeline(sample_size=args.px // 8).to(args.device)
    else:
        pipe = load_pipeline(args.model, device=args.device)
    pipe.set_progress_bar_config(disable=True)
    cuda = args.device.startswith("cuda")
    if cuda:  # tensors on the device only: the libraries and the host copy are not counted
        torch.cuda.synchronize()
        loaded = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    else:
        loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    prompt = "a red circle"
    t0 = time.perf_counter()
    if args.variant == "naive":
        naive_esd(pipe, prompt, iters=args.iters, ddim_steps=args.ddim_steps, eta=1.0, lr=1e-5, seed=0)
    else:
        run_method(
            pipe,
            "esd-x",
            EraseInputs(targets=(prompt,)),
            seed=0,
            progress=False,
            overrides={
                "steps": args.iters,
                "ddim_steps": args.ddim_steps,
                "trajectories": args.trajectories,
                "batch_size": 1,
                "eta": 1.0,
                "lr": 1e-5,
                "low_memory": args.variant == "ours-low-memory",
            },
        )
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    peak = (
        torch.cuda.max_memory_allocated()
        if cuda
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    )
    mem = "cuda" if cuda else "rss"
    return {
        "variant": args.variant,
        "seconds": seconds,
        f"peak_{mem}_mb": peak / 2**20,
        f"model_loaded_{mem}_mb": loaded / 2**20,
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="toy", help="toy, a diffusers folder, or sd15 (random-weight SD 1.5)")
    p.add_argument("--iters", type=int, default=100)
    p.add_argument("--ddim-steps", type=int, default=25)
    p.add_argument("--trajectories", type=int, default=1, help="trajectories sampled up front (ours)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu", help="cpu (peak resident memory) or cuda (peak allocated)")
    p.add_argument("--px", type=int, default=256, help="image size of the sd15 model (latents px/8)")
    p.add_argument(
        "--low-memory", action="store_true", help="also run ours with low_memory (recomputed activations)"
    )
    p.add_argument("--variant", choices=["naive", "ours", "ours-low-memory"], help=argparse.SUPPRESS)
    p.add_argument("--out", help="write the JSON result here")
    args = p.parse_args()
    if args.variant:
        print(json.dumps(run_variant(args)))
        return
    results = {}
    variants = ("naive", "ours", "ours-low-memory") if args.low_memory else ("naive", "ours")
    for variant in variants:  # one after the other: two torch jobs on 2 cores distort both
        cmd = [
            sys.executable,
            __file__,
            "--variant",
            variant,
            "--model",
            args.model,
            "--iters",
            str(args.iters),
            "--ddim-steps",
            str(args.ddim_steps),
            "--trajectories",
            str(args.trajectories),
            "--threads",
            str(args.threads),
            "--px",
            str(args.px),
            "--device",
            args.device,
        ]
        env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True).stdout
        results[variant] = json.loads(out.strip().splitlines()[-1])
    n, o = results["naive"], results["ours"]
    mem = "cuda" if args.device.startswith("cuda") else "rss"
    peak, loaded = f"peak_{mem}_mb", f"model_loaded_{mem}_mb"
    summary = {
        "model": args.model,
        "iters": args.iters,
        "ddim_steps": args.ddim_steps,
        "trajectories": args.trajectories,
        "threads": args.threads,
        "px": args.px if args.model == "sd15" else None,
        "device": args.device,
        **results,
        "time_ratio_ours_over_naive": round(o["seconds"] / n["seconds"], 3),
        "speedup": round(n["seconds"] / o["seconds"], 2),
        "peak_memory_ratio_ours_over_naive": round(o[peak] / n[peak], 3),
        # The loaded pipeline (UNet, text encoder, libraries) is in both peaks; this is what the
        # edit itself adds on top of it.
        "added_memory_ratio_ours_over_naive": round((o[peak] - o[loaded]) / (n[peak] - n[loaded]), 3),
    }
    if args.low_memory:
        r = results["ours-low-memory"]
        summary["low_memory"] = {
            "speedup": round(n["seconds"] / r["seconds"], 2),
            "peak_memory_ratio_over_naive": round(r[peak] / n[peak], 3),
            "added_memory_ratio_over_naive": round(
                (r[peak] - r[loaded]) / (n[peak] - n[loaded]),
                3,
            ),
        }
    print(json.dumps(summary, indent=2))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(summary, f, indent=2)


if __name__ == "__main__":
    main()
