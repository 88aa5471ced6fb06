"""Untraining on the trained toy world, scored against its computed oracles (shipped weights).

The forget set is 32 red samples drawn with seed 0 (``toy:color=red:n=32``): small enough that
the model retrained without them still draws red (seed 000's point), which is what an untraining
method should converge to; the unlearning oracle (retrained without any red) is the reference for
the whole concept.
"""

import numpy as np
import pytest
import torch

from erase.data import encode_set, resolve_sets, toy_ids, toy_set
from erase.methods.base import EraseInputs
from erase.models import load_pipeline
from erase.recipes.oracle import find_oracle
from erase.score import score_concepts
from erase.toy.world import World
from erase.unlearn import run_method
from erase.untrain import Probe, heldout_twins, measure

FORGET = "toy:color=red:n=32"
# Each test judges or trains on the toy world (tens of seconds to minutes): the efficacy tier.
pytestmark = pytest.mark.efficacy


@pytest.fixture(scope="module")
def oracles():
    untrain = find_oracle(ids=toy_ids(FORGET, seed=0))
    unlearn = find_oracle(exclude=("color=red",))
    assert untrain and unlearn, "the shipped oracles are missing; build them with `erase toy oracle`"
    return {"untraining": f"toy+{untrain}", "unlearning": f"toy+{unlearn}"}


def test_the_untraining_oracle_still_draws_the_concept_and_the_unlearning_oracle_much_less(
    oracles, toy_judge, toy_book
):
    red = toy_book.get("red")
    acc = {}
    for name, spec in oracles.items():
        pipe = load_pipeline(spec, device="cpu")
        res = score_concepts(pipe, toy_judge, [red], seeds=[2000, 2001], steps=10, progress=False)
        acc[name] = res["concepts"]["red"]["accuracy"]
    assert acc["untraining"] >= 0.8, acc  # 32 of 1200 red samples left out: red is still learned
    # Never saw a red sample: red drops far, but not to zero (measured 8/24 on these evaluation
    # seeds, as in notebook 03; 0.42 on tuning seeds 1000-1001): the frozen
    # text encoder still places "red" near the colours it was trained with, so the ideal concept
    # erasure of this toy is not 0%.
    assert acc["unlearning"] <= acc["untraining"] - 0.4, acc


@pytest.fixture(scope="module")
def probes(toy_pipe):
    forget, retain = resolve_sets(FORGET, "toy:rest:n=64", seed=0)
    twins = toy_set(heldout_twins(list(forget.ids)), World(size=2 * World().size))
    s = toy_pipe.scheduler
    return (
        forget,
        retain,
        {
            "forget": Probe.make(encode_set(toy_pipe, forget), s, seed=0),
            "heldout": Probe.make(encode_set(toy_pipe, twins), s, seed=1),
            "retain": Probe.make(encode_set(toy_pipe, retain), s, seed=2),
        },
    )


def test_gradient_ascent_raises_the_forget_loss_and_moves_away_from_the_oracle(oracles, probes):
    forget, _, pr = probes
    oracle = load_pipeline(oracles["untraining"], device="cpu")
    target = pr["forget"].predictions(oracle.unet, oracle.scheduler)
    pipe = load_pipeline("toy", device="cpu")
    before = measure(pipe.unet, pipe.scheduler, pr, target)
    run_method(pipe, "ga", EraseInputs(forget=forget), seed=0, progress=False)
    after = measure(pipe.unet, pipe.scheduler, pr, target)
    assert after["forget_loss"] > 1.5 * before["forget_loss"], (before, after)
    # The ideal answer barely differs from the original here; ascent walks away from it.
    assert after["distance_to_oracle"] > 2 * before["distance_to_oracle"], (before, after)


# About 3 minutes: two HAMU runs (two backward passes a step) and the judge
def test_hamu_tells_an_easy_pair_from_a_hard_one_and_the_easy_pair_keeps_more(probes, toy_judge, toy_book):
    forget, _, _ = probes
    pairs = {  # retain set, and the concepts it shows
        "easy": ("toy:color=blue:shape=square:n=64", ["blue", "square"]),  # nothing shared with red
        "hard": ("toy:color=red:n=64", ["red"]),  # other red samples: the colour is shared
    }

    def accuracy(pipe, names):
        res = score_concepts(
            pipe, toy_judge, [toy_book.get(n) for n in names], seeds=[2000, 2001], steps=10, progress=False
        )
        return {n: r["accuracy"] for n, r in res["concepts"].items()}

    base = accuracy(load_pipeline("toy", device="cpu"), ["red", "blue", "square"])
    logs, forget_rise, retain_change, acc_drop = {}, {}, {}, {}
    for name, (retain_spec, shown) in pairs.items():
        _, retain = resolve_sets(FORGET, retain_spec, seed=0)
        pipe = load_pipeline("toy", device="cpu")
        probe = {"forget": Probe.make(encode_set(pipe, forget), pipe.scheduler, seed=0)}
        probe["retain"] = Probe.make(encode_set(pipe, retain), pipe.scheduler, seed=2)
        before = measure(pipe.unet, pipe.scheduler, probe, None)
        out = run_method(pipe, "hamu", EraseInputs(forget=forget, retain=retain), seed=0, progress=False)
        after = measure(pipe.unet, pipe.scheduler, probe, None)
        logs[name] = out.log
        forget_rise[name] = after["forget_loss"] / before["forget_loss"] - 1
        retain_change[name] = after["retain_loss"] / before["retain_loss"] - 1
        now = accuracy(pipe, shown)
        acc_drop[name] = max(base[c] - now[c] for c in shown)
    k_easy = torch.tensor(logs["easy"]["kappa"]).mean()
    k_hard = torch.tensor(logs["hard"]["kappa"]).mean()
    seen = (k_easy, k_hard, forget_rise, retain_change, acc_drop)
    # Measured (toy settings: batches of 16, B = 0.05 lr): kappa 0.69 vs 0.85; forget loss +13% vs
    # +10%; retain loss -12% vs +8%; the judge's accuracy on the retained concepts did not move in
    # either (blue 1.00, square 0.96; red 1.00; on tuning seeds 1000-1001, where the setting was
    # chosen; the test scores evaluation seeds 2000-2001 and passes there): the loss shows the cost,
    # the judge not yet.
    assert k_hard > k_easy + 0.1, seen
    assert min(forget_rise.values()) > 0.03, seen  # both really forgot (the step's promise)
    assert retain_change["easy"] < retain_change["hard"] - 0.1, seen  # the easy pair keeps more
    assert acc_drop["easy"] <= acc_drop["hard"], seen
    assert all(v["verdict"] for v in logs.values()), seen
    # kappa against the retain set's own alignment, kappa_ref (measured: 0.69 / 0.74 = 0.93 for the
    # easy pair, 0.85 / 0.81 = 1.05 for the hard one): the verdicts name which is which.
    ratio = {k: np.mean(v["kappa"]) / np.mean(v["kappa_ref"]) for k, v in logs.items()}
    assert logs["easy"]["verdict"].startswith("easy pair"), (ratio, logs["easy"]["verdict"])
    assert logs["hard"]["verdict"].startswith("hard pair"), (ratio, logs["hard"]["verdict"])
