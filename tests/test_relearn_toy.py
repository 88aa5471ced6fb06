"""The relearning attack as a calibrated instrument, on the toy world (efficacy tier, about a minute).

The attack is first run on the unlearning oracle (the toy UNet retrained without any cross,
``erase/toy/oracles/shape=cross``): a budget in which the oracle does not relearn the cross says
nothing about an erasure. Then the verdict for an erasure (UCE on the cross) is computed against the
oracle's runs under the very same attack.

The setting was picked on tuning seeds (relearning seed 100, image seeds 1000-1001: SGD at 0.1
brought the cross back on the oracle in 10 steps, 24/24 images; at 0.03 not within 60); this test
uses evaluation seeds (``erase.seeds``). Red is not used: on its oracle no optimizer or rate tried
brings red back within 60 steps (``pipelines/study/016-sweep60-oracle-red.yaml``).

Both readings are the toy CLIP judge's. At SGD 0.1 the fit judge (``erase.toy.fit``) finds no cross
in these models' images, which are noise (``docs/results/relearn_sgd01_fit.json``): this checks the
instrument's mechanics on a real model, not that crosses come back.
"""

from __future__ import annotations

import copy

import pytest

from erase import jobs
from erase.cli import main
from erase.relearn import summarize, verdict
from erase.seeds import EVAL_IMAGE_SEEDS, EVAL_RELEARN_SEEDS

SGD_LR = 0.1  # chosen on tuning seeds, see above
pytestmark = pytest.mark.efficacy  # a minute: the default suite keeps its six-minute bound
BUDGET = 30


@pytest.fixture(scope="module")
def attacked(tmp_path_factory):
    root = tmp_path_factory.mktemp("calibrated")
    uce = root / "uce-cross"
    assert main(["concept", "cross", "--method", "uce", "--no-score", "--out", str(uce)]) == 0
    cfg = jobs.RelearnJob(
        run=str(uce),
        optimizers={"sgd": (SGD_LR,)},
        steps=BUDGET,
        eval_every=10,
        seeds=(EVAL_RELEARN_SEEDS[0],),
        eval_seeds=(EVAL_IMAGE_SEEDS[0], EVAL_IMAGE_SEEDS[1]),
        others=(),
        snr_gamma=5,
        stop_at_resurgence=True,
        out=root / "relearn",
    )
    return jobs.run(cfg).record["results"]


def test_the_oracle_relearns_the_cross_within_the_budget(attacked):
    assert "oracles/shape=cross" in attacked["oracle"]["model"]  # found for the concept, not named
    oracle = attacked["oracle"]["summary"][0]
    assert oracle["median"] is not None and oracle["median"] <= BUDGET, oracle["steps_per_seed"]


def test_the_verdict_on_an_erasure_is_computed_against_the_oracle(attacked):
    row, oracle = attacked["summary"][0], attacked["oracle"]["summary"][0]
    assert row["verdict"]["outcome"] in ("held", "came back")  # the attack could tell
    if row["verdict"]["outcome"] == "came back":
        assert f"the oracle's {oracle['median']:g}" in row["verdict"]["text"]  # the delay, relative
    else:
        assert f"oracle came back in {oracle['median']:g}" in row["verdict"]["text"]
    # The same curves cut to a budget the oracle did not relearn the cross in: never "held".
    cut = oracle["median"] - 10
    short = {}
    for key in ("runs", "oracle"):
        runs = copy.deepcopy(attacked["runs"] if key == "runs" else attacked["oracle"]["runs"])
        for r in runs:
            r["curve"] = [p for p in r["curve"] if p["step"] <= cut]
            r["config"]["steps"] = cut
        short[key] = summarize(runs, "cross", attacked["original"]["accuracy"]["cross"])[0]
    assert verdict(short["runs"], short["oracle"])["outcome"] in ("too weak to judge", "came back")
