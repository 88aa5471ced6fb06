"""The one declared split of seeds: settings are tuned on tuning seeds, and results, tests and
README tables are reported on evaluation seeds that no setting was chosen on.

Two kinds of seed meet in a measurement: the seeds that draw the images a judge scores (image
seeds) and the seeds of a training run (relearning seeds: data order and noise). Each kind has a
tuning range and an evaluation range, disjoint. The toy settings of the first sessions were tuned on
image seeds 1000-1002, so 1000 and up are tuning seeds; evaluation starts at 2000.

``split_of`` names where a list of seeds falls, for records (``seed_split``) and checks.
"""

from __future__ import annotations

from collections.abc import Iterable

TUNING_IMAGE_SEEDS = range(1000, 2000)
EVAL_IMAGE_SEEDS = range(2000, 3000)
TUNING_RELEARN_SEEDS = range(100, 200)
EVAL_RELEARN_SEEDS = range(0, 100)

SPLITS = {
    "image": (TUNING_IMAGE_SEEDS, EVAL_IMAGE_SEEDS),
    "relearn": (TUNING_RELEARN_SEEDS, EVAL_RELEARN_SEEDS),
}


def split_of(seeds: Iterable[int], kind: str = "image") -> str:
    """``"tuning"``, ``"evaluation"``, ``"mixed"`` (some of each: not a clean result) or
    ``"undeclared"`` (outside both ranges)."""
    tuning, evaluation = SPLITS[kind]
    seeds = list(seeds)
    if seeds and all(s in tuning for s in seeds):
        return "tuning"
    if seeds and all(s in evaluation for s in seeds):
        return "evaluation"
    if any(s in tuning for s in seeds) and any(s in evaluation for s in seeds):
        return "mixed"
    return "undeclared"


def eval_image_seeds(n: int) -> tuple[int, ...]:
    """The first ``n`` evaluation image seeds: the default of every job that scores images."""
    return tuple(EVAL_IMAGE_SEEDS[:n])
