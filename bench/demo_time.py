"""Wall time of the README's main job, `erase run pipelines/toy-demo.yaml`, stage by stage.

Runs it twice in this process: cold (an empty image cache, as on a fresh machine) and warm (the
audit's base-model images cached), and reports each stage's seconds and the warm/cold ratio.

    python bench/demo_time.py [--threads 2] [--out bench/results/demo_time.json]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _shown(path: str) -> str:
    """The pipeline's path relative to the repository when it is inside it (records travel)."""
    p = Path(path).resolve()
    return str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(p)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--pipeline", default=str(ROOT / "pipelines" / "toy-demo.yaml"))
    ap.add_argument("--out", type=Path, help="write the timings here as JSON")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from erase.cli import main as erase

    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["ERASE_CACHE"] = str(Path(tmp) / "cache")  # cold: nothing cached yet
        for label in ("cold", "warm"):
            out = Path(tmp) / label
            t0 = time.time()
            assert erase(["run", args.pipeline, "--out", str(out)]) == 0
            wall = time.time() - t0
            state = json.loads((out / "pipeline.json").read_text())
            runs[label] = {"wall_seconds": round(wall, 1)} | {
                s["name"]: s.get("seconds") for s in state["stages"]
            }
    result = {
        "pipeline": _shown(args.pipeline),
        "threads": args.threads,
        "runs": runs,
        "warm_over_cold": round(runs["warm"]["wall_seconds"] / runs["cold"]["wall_seconds"], 2),
    }
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
