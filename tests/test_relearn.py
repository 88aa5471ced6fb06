"""Mechanics of the one relearning loop (tiny pipelines); efficacy on the toy world is issue 4's."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from erase.errors import EraseError
from erase.layers import select_parameters
from erase.methods.base import ImageSet
from erase.relearn import RelearnConfig as _RelearnConfig
from erase.relearn import (
    attack,
    censored_median,
    encode_examples,
    format_resurgence,
    load_image_folder,
    relearn,
    steps_to_resurgence,
    summarize,
)
from tests import tiny

# The relearning loop's per-run config has no defaults of its own (the job holds them); these are the
# tests' values.
TEST_RUN = {"optimizer": "adam", "lr": 1e-4, "steps": 100, "batch_size": 4, "eval_every": 10}
TEST_RUN |= {"params": "all", "seed": 0, "tau": 0.8, "snr_gamma": None, "stop_at_resurgence": False}


def RelearnConfig(**changes):
    return _RelearnConfig(**(TEST_RUN | changes))


def examples(n=4):
    rng = np.random.default_rng(0)
    ims = tuple(Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)) for _ in range(n))
    return ImageSet(ims, ("a red circle",) * n)


def run(cfg, pipe=None):
    pipe = pipe or tiny.sd1()
    data = encode_examples(pipe, examples())
    calls = []

    def evaluate(final=True):
        calls.append(1)
        return {"red": 0.0}

    return pipe, relearn(pipe, data, cfg, evaluate, progress=False), calls


@pytest.mark.parametrize("optimizer,lr", [("sgd", 0.5), ("adam", 1e-3)])
def test_loss_falls_under_both_optimizers(optimizer, lr):
    # The same examples over and over: the training loss must go down whatever the optimizer.
    _, out, _ = run(RelearnConfig(optimizer=optimizer, lr=lr, steps=30, batch_size=4, eval_every=30))
    losses = out["losses"]
    assert np.mean(losses[-5:]) < np.mean(losses[:5]), losses


def test_only_the_chosen_parameters_move_and_evaluation_runs_every_k_steps():
    pipe = tiny.sd1()
    before = {k: v.clone() for k, v in pipe.unet.state_dict().items()}
    _, out, calls = run(RelearnConfig(params="xattn-kv", steps=6, eval_every=2, lr=1e-2), pipe)
    allowed = set(select_parameters(pipe.unet, "xattn-kv"))
    changed = {k for k, v in pipe.unet.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and changed <= allowed
    assert [p["step"] for p in out["curve"]] == [0, 2, 4, 6] and len(calls) == 4


def test_fixed_seed_fixed_result():
    a = run(RelearnConfig(steps=4, eval_every=4, seed=7))[0].unet.state_dict()
    b = run(RelearnConfig(steps=4, eval_every=4, seed=7))[0].unet.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def point(step, **acc):
    return {"step": step, "accuracy": acc}


def test_censoring_rule():
    curve = [point(0, red=0.05), point(10, red=0.5), point(20, red=0.85)]
    assert steps_to_resurgence(curve, "red", original=1.0, tau=0.8) == 20
    assert steps_to_resurgence(curve, "red", original=1.0, tau=0.9) is None
    assert steps_to_resurgence(curve, "red", original=0.5, tau=0.8) == 10  # relative to the original
    assert format_resurgence(None, 200) == "> 200" and format_resurgence(20, 200) == "20"


def test_censored_median_never_invents_a_number():
    assert censored_median([10, 30, 20]) == 20
    assert censored_median([10, None, 20]) == 20  # one censored run of three: still known
    assert censored_median([10, None, None]) is None  # the middle run never came back
    assert censored_median([10, 20, None, None]) is None
    assert censored_median([10, 20, 30, None]) == 25


def test_summary_rows_per_optimizer_and_lr():
    def run_(opt, seed, curve):
        cfg = {"optimizer": opt, "lr": 0.1, "seed": seed, "tau": 0.8, "steps": 20}
        return {"config": cfg, "curve": curve}

    runs = [
        run_(
            "adam",
            0,
            [point(0, red=0.0, blue=1.0), point(10, red=0.9, blue=0.5), point(20, red=1.0, blue=0.4)],
        ),
        run_(
            "adam",
            1,
            [point(0, red=0.0, blue=1.0), point(10, red=0.2, blue=0.9), point(20, red=0.9, blue=0.6)],
        ),
        run_(
            "sgd",
            0,
            [point(0, red=0.0, blue=1.0), point(10, red=0.1, blue=1.0), point(20, red=0.3, blue=1.0)],
        ),
    ]
    adam, sgd = summarize(runs, "red", original=1.0)
    assert adam["steps_per_seed"] == [10, 20] and adam["median"] == 15 and adam["range"] == [10, 20]
    assert adam["others_final"] == {"blue": 0.5} and adam["peak"] == 0.95
    assert sgd["median"] is None and sgd["censored"] == 1 and sgd["range"] is None


def test_attack_starts_every_run_from_the_same_weights_and_restores_them():
    pipe = tiny.sd1()
    before = {k: v.clone() for k, v in pipe.unet.state_dict().items()}
    data = encode_examples(pipe, examples())
    calls = []

    def evaluate(final=True):
        calls.append(1)
        return {"accuracy": {"red": float(len(calls))}}

    cfgs = [
        RelearnConfig(optimizer=o, lr=1e-2, steps=3, eval_every=3, seed=s)
        for o in ("sgd", "adam")
        for s in (0, 1)
    ]
    runs = attack(pipe, data, cfgs, evaluate, progress=False)
    assert len(runs) == 4 and len(calls) == 1 + 4  # one shared start, one end point per run
    assert all(r["curve"][0]["accuracy"]["red"] == 1.0 for r in runs)
    assert all(torch.equal(v, before[k]) for k, v in pipe.unet.state_dict().items())
    # Same seed, same optimizer, from the same start: the same run.
    again = attack(pipe, data, cfgs[:1], evaluate, progress=False)
    assert again[0]["losses"] == runs[0]["losses"]
    # A learning rate that blows up is recorded as diverged; the sweep goes on.
    wild = attack(
        pipe, data, [RelearnConfig(optimizer="sgd", lr=1e12, steps=5, eval_every=1), cfgs[0]], evaluate
    )
    assert wild[0]["diverged"] and "lower the learning rate" in wild[0]["diverged"]
    assert wild[1]["losses"] == runs[0]["losses"]
    row = summarize(wild[:1], "red", original=1e6)[0]
    assert row["diverged"] == 1 and row["median"] is None and row["censored"] == 0
    with pytest.raises(EraseError, match="same parameters"):
        attack(pipe, data, [RelearnConfig(params="all"), RelearnConfig(params="xattn")], evaluate)


@pytest.mark.parametrize(
    "bad,match",
    [
        ({"optimizer": "rmsprop"}, "unknown optimizer 'rmsprop'"),
        ({"lr": 0.0}, "learning rate must be positive"),
        ({"steps": 0}, "steps must be positive"),
        ({"params": "everything"}, "params must be one of"),
    ],
)
def test_bad_relearning_settings(bad, match):
    with pytest.raises(EraseError, match=match):
        RelearnConfig(**bad)


def test_relearning_folders_need_images_and_captions(tmp_path):
    with pytest.raises(EraseError, match="does not exist"):
        load_image_folder(tmp_path / "nope")
    (tmp_path / "d").mkdir()
    with pytest.raises(EraseError, match=r"no captions.txt or metadata.jsonl"):
        load_image_folder(tmp_path / "d")
    (tmp_path / "d" / "captions.txt").write_text("a.png\ta red circle\n")
    with pytest.raises(EraseError, match="missing or not an image"):
        load_image_folder(tmp_path / "d")
    Image.new("RGB", (8, 8), "red").save(tmp_path / "d" / "a.png")
    got = load_image_folder(tmp_path / "d")
    assert got.prompts == ("a red circle",) and len(got.images) == 1
    (tmp_path / "d" / "captions.txt").write_text("\n")
    with pytest.raises(EraseError, match="lists no images"):
        load_image_folder(tmp_path / "d")


# The commands ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def uce_run(tmp_path_factory):
    from erase.cli import main

    run_dir = tmp_path_factory.mktemp("runs") / "red-uce"
    assert main(["concept", "red", "--method", "uce", "--no-score", "--out", str(run_dir)]) == 0
    return run_dir


def cli(args, capsys):
    from erase.cli import main

    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_relearn_and_compare_write_curves_plot_and_table(uce_run, tmp_path, capsys):
    # Mechanics only (a 2-step budget and 2-step sampling); the toy-world curves are in the README.
    out = tmp_path / "rl"
    args = ["relearn", uce_run, "--optimizers", "sgd,adam", "--lrs", "sgd=0.1", "--lrs", "adam=1e-3,3e-4"]
    args += ["--steps", 2, "--eval-every", 1, "--seeds", "0,1", "--examples", 2, "--others", "green"]
    args += ["--eval-seeds", 1000, "--other-seeds", 1000, "--eval-steps", 2, "--out", out, "--oracle", "none"]
    code, stdout, err = cli([*args, "--base-check"], capsys)
    assert code == 0, err
    assert "steps to resurgence" in stdout and "adam" in stdout and "sgd" in stdout
    rec = json.loads((out / "relearn.json").read_text())
    res = rec["results"]
    assert len(res["runs"]) == 3 * 2  # (sgd 0.1, adam 1e-3, adam 3e-4) x 2 seeds
    assert [p["step"] for p in res["runs"][0]["curve"]] == [0, 1, 2]
    assert set(res["runs"][0]["curve"][-1]["accuracy"]) == {"red", "green"}
    assert res["images_per_point"] == {"red": 12, "green": 12}
    assert len(res["summary"]) == 3 and rec["trainable_parameters"] > 0
    assert rec["prompt_hashes"]["relearning examples"]["n"] == 2
    assert (out / "relearn.png").stat().st_size > 10_000
    # The same attack on the original: every config again, the whole budget, its row beside each.
    base = res["base"]
    assert [r["config"] for r in base["runs"]] == [
        r["config"] | {"stop_at_resurgence": False} for r in res["runs"]
    ]
    assert all("kept" in row["base_check"] for row in res["summary"]) and "base check: the attack" in stdout

    code, stdout, err = cli(["compare", out, out, "--out", tmp_path / "cmp"], capsys)
    assert code == 0, err
    assert "| uce | red |" in stdout and (tmp_path / "cmp" / "compare.md").is_file()


RELEARN_BAD = [
    (["--optimizers", "rmsprop"], "unknown optimizer 'rmsprop'"),
    (["--lrs", "0"], "learning rate must be positive"),
    (["--lrs", "adam=fast"], "must be numbers"),
    (["--optimizers", "sgd", "--lrs", "adam=1e-4"], "not in --optimizers"),
    (["--params", "everything"], "params must be one of"),
    (["--steps", "0"], "--steps must be positive"),
    (["--data", "DATA"], "no captions.txt or metadata.jsonl"),
]


@pytest.mark.parametrize("extra,message", RELEARN_BAD, ids=[" ".join(a) for a, _ in RELEARN_BAD])
def test_bad_relearning_input_is_one_line_exit_2(extra, message, uce_run, tmp_path, capsys):
    (tmp_path / "DATA").mkdir()
    (tmp_path / "DATA" / "a.png").write_bytes(b"")
    extra = [str(tmp_path / "DATA") if a == "DATA" else a for a in extra]
    code, _, err = cli(["relearn", uce_run, *extra, "--out", tmp_path / "out"], capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and message in lines[0], err
    assert not (tmp_path / "out").exists() and not (uce_run / "relearn").exists()


def test_relearning_a_folder_without_a_delta_is_refused(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    code, _, err = cli(["relearn", tmp_path / "run"], capsys)
    assert code == 2 and "has no delta.safetensors" in err
    code, _, err = cli(["compare", tmp_path / "run"], capsys)
    assert code == 2 and "holds no relearn.json" in err


def _run(steps_back, diverged, budget=100):
    """A finished run's record: accuracy 1.0 from ``steps_back`` on (None: never), maybe diverged."""
    curve = [
        {"step": s, "accuracy": {"red": 1.0 if steps_back is not None and s >= steps_back else 0.0}}
        for s in range(0, budget + 1, 10)
    ]
    if diverged:
        curve = curve[:4]  # stopped at step 30
    cfg = {"optimizer": "sgd", "lr": 1.0, "seed": 0, "tau": 0.8, "steps": budget}
    return {"config": cfg, "curve": curve, "diverged": "loss became nan" if diverged else None}


def test_a_diverged_run_is_never_reported_as_held():
    from erase.relearn import format_summary, row_resurgence, verdict

    held = summarize([_run(None, False)], "red", 1.0)[0]
    blew = summarize([_run(None, True), _run(None, True)], "red", 1.0)[0]
    mixed = summarize([_run(None, True), _run(20, False), _run(40, False)], "red", 1.0)[0]
    back_then_blew = summarize([_run(20, True)], "red", 1.0)[0]
    assert row_resurgence(held) == "> 100" and held["censored"] == 1
    assert (
        row_resurgence(blew) == "diverged"
        and blew["censored"] == 0
        and "> 100" not in format_summary([blew], "red", 1.0, 0.0).splitlines()[2]
    )
    assert row_resurgence(mixed) == "30" and mixed["diverged"] == 1  # the median of the runs that ran
    assert row_resurgence(back_then_blew) == "20"  # it came back before the loss blew up
    assert verdict(blew, held)["outcome"] == "diverged"  # never "held"


def test_the_verdict_is_judged_against_the_oracle():
    from erase.relearn import verdict

    def row(*runs):
        return summarize(list(runs), "red", 1.0)[0]

    held, back20, back40 = row(_run(None, False)), row(_run(20, False)), row(_run(40, False))
    blew = row(_run(None, True))
    assert verdict(held, back20)["outcome"] == "held"  # the oracle came back under the same attack
    assert verdict(held, held)["outcome"] == "too weak to judge"  # neither came back: no evidence
    assert verdict(held, blew)["outcome"] == "too weak to judge"  # the calibration itself blew up
    assert verdict(held, None)["outcome"] == "uncalibrated"
    assert verdict(blew, back20)["outcome"] == "diverged"
    came = verdict(back40, back20)
    assert came["outcome"] == "came back" and "2.00x the oracle's 20" in came["text"]
    assert verdict(back20, held)["outcome"] == "came back"  # back even where the oracle was not
    at_once = verdict(row(_run(0, False)), back20)  # never erased: no ratio to the oracle
    assert at_once["outcome"] == "came back" and at_once["text"].startswith("not erased"), at_once


def test_the_base_check_says_whether_the_attack_keeps_the_concept_where_nothing_was_erased():
    from erase.relearn import base_check

    def row(*runs):
        return summarize(list(runs), "red", 1.0)[0]

    kept = base_check(row(_run(0, False)))
    assert kept["kept"] and "keeps the concept" in kept["text"]
    lost = base_check(row(_run(0, False), _run(None, False)))  # one seed ends at 0.0: the mean 0.5
    assert not lost["kept"] and "loses the concept" in lost["text"] and "bar 0.80" in lost["text"]
    blew = base_check(row(_run(0, True)))  # at the bar where it stopped, but the loss blew up
    assert not blew["kept"] and "diverged on the original (1/1 runs)" in blew["text"]


def test_the_learning_rate_rule_picks_the_fastest_that_did_not_diverge():
    from erase.relearn import choose_lr

    def row(lr, *runs):
        for r in runs:
            r["config"]["lr"] = lr
        return summarize(list(runs), "red", 1.0)[0]

    slow, fast, wild = (
        row(0.01, _run(None, False), _run(60, False)),
        row(0.1, _run(20, False)),
        row(1.0, _run(None, True)),
    )
    assert choose_lr([slow, fast, wild])["lr"] == 0.1 and choose_lr([slow, fast, wild])["came_back"]
    tie = row(0.03, _run(20, False))
    assert choose_lr([tie, fast])["lr"] == 0.03  # a tie goes to the smaller rate
    none = choose_lr([row(0.01, _run(None, False)), wild])
    assert none["lr"] == 0.01 and not none["came_back"]  # never the diverged one; flagged


def test_the_selective_rule_picks_the_fastest_rate_that_kept_the_other_concepts():
    from erase.jobs import RelearnJob
    from erase.jobs.base import FieldError
    from erase.relearn import choose_lr, others_kept

    def row(lr, steps_back, blue_end, diverged=False):
        r = _run(steps_back, diverged)
        r["config"]["lr"] = lr
        r["curve"][0]["accuracy"]["blue"] = 0.8  # the other concept where every run began
        r["curve"][-1]["accuracy"]["blue"] = blue_end  # and where this one stopped
        return summarize([r], "red", 1.0)[0]

    wreck, gentle, slow = row(0.1, 10, 0.0), row(0.03, 30, 0.72), row(0.01, 60, 0.8)
    assert others_kept(gentle) == pytest.approx(0.9) and others_kept(wreck) == 0.0
    # The study's sweep table names the rule and shows what each rate kept.
    from erase.report.html import _relearn_sections

    chosen = [choose_lr([wreck, gentle, slow], "selective", keep=0.8)]
    sweep = {"summary": [wreck, gentle, slow], "chosen": chosen, "sweep": True}
    md = "\n".join(_relearn_sections([{"run": "sweep", "relearn": sweep}]))
    assert "the 'selective' rule" in md and "0.03: 30, peak 1.00, others kept 0.90" in md, md
    assert md.rstrip().splitlines()[-1].endswith("| 0.03 |"), md
    assert choose_lr([wreck, gentle, slow])["lr"] == 0.1  # the fastest rule ignores the damage
    sel = choose_lr([wreck, gentle, slow], "selective", keep=0.8)
    assert sel["lr"] == 0.03 and sel["selective"] and sel["rule"] == "selective", sel
    assert choose_lr([wreck, gentle, slow], "selective", keep=0.95)["lr"] == 0.01  # only slow kept 1.0
    # None kept them: the least damage of those that came back, flagged; never a diverged one.
    rough = choose_lr([wreck, row(0.05, 20, 0.4), row(0.3, None, 0.8, diverged=True)], "selective")
    assert rough["lr"] == 0.05 and rough["selective"] is False and rough["came_back"], rough
    blew_run = _run(None, True)
    blew_run["config"]["lr"] = 0.5
    blew = summarize([blew_run], "red", 1.0)[0]
    assert not blew["others_final"]  # diverged before the last point: the others were never read
    assert choose_lr([wreck, gentle, blew], "selective")["lr"] == 0.03
    no_others = summarize([_run(20, False)], "red", 1.0)[0]
    with pytest.raises(EraseError, match="other concepts"):
        choose_lr([no_others], "selective")
    with pytest.raises(FieldError, match="select"):
        RelearnJob(run="x", select="kindest").check()
    with pytest.raises(FieldError, match="others"):
        RelearnJob(run="x", select="selective", others=()).check()


def test_a_sweep_that_scored_the_other_concepts_plots_what_they_kept(tmp_path):
    from erase.report.plots import plot_sweep

    runs = []
    for lr, back, blue in ((0.1, 10, 0.0), (0.01, 60, 0.8)):
        r = _run(back, False)
        r["config"]["lr"] = lr
        r["curve"][0]["accuracy"]["blue"], r["curve"][-1]["accuracy"]["blue"] = 0.8, blue
        runs.append(r)
    rows = summarize(runs, "red", 1.0)
    plot_sweep(runs, rows, "red", bar=0.8, path=tmp_path / "sweep.png")
    blew = _run(None, True)
    blew["config"]["lr"] = 1.0
    with_blew = summarize([*runs, blew], "red", 1.0)  # a diverged rate has no others: no point
    plot_sweep([*runs, blew], with_blew, "red", bar=0.8, path=tmp_path / "blew.png")
    plain = [r | {"others_final": {}} for r in rows]
    plot_sweep(runs, plain, "red", bar=0.8, path=tmp_path / "plain.png")
    wide, narrow = Image.open(tmp_path / "sweep.png").size, Image.open(tmp_path / "plain.png").size
    assert wide[0] > narrow[0]  # one panel more: the other concepts kept, against the rate


@pytest.mark.parametrize("name", ["lion", "signsgd"])
def test_sign_based_optimizers_move_every_coordinate_by_the_rate(name):
    from erase.train import make_optimizer

    w = torch.nn.Parameter(torch.zeros(3))
    opt = make_optimizer([w], name, 0.01)
    w.grad = torch.tensor([5.0, -1e-4, 0.3])
    opt.step()
    assert torch.allclose(w.detach(), torch.tensor([-0.01, 0.01, -0.01]))
    # A second, opposite gradient: signSGD follows it; Lion's momentum (0.99 of the first, 0.1 of
    # this one in the step) still points the first way where the new gradient is small.
    w.grad = torch.tensor([-5.0, 1e-4, -0.001])
    opt.step()
    want = [0.0, 0.0, 0.0] if name == "signsgd" else [0.0, 0.0, -0.02]
    assert torch.allclose(w.detach(), torch.tensor(want)), w


def test_a_run_can_stop_at_resurgence():
    pipe = tiny.sd1()
    data = encode_examples(pipe, examples())
    cfg = RelearnConfig(steps=20, eval_every=5, stop_at_resurgence=True)
    marks, finals = iter([0.0, 0.3, 0.9]), []

    class Evaluate:  # scores the other concepts only at the end, like Evaluator(others_at="end")
        def __call__(self, final=True):
            finals.append(final)
            return {"accuracy": {"red": next(marks)}}

        def others(self):
            return {"accuracy": {"blue": 0.5}}

    out = relearn(pipe, data, cfg, Evaluate(), progress=False, bar=("red", 0.8))
    assert [p["step"] for p in out["curve"]] == [0, 5, 10] and len(out["losses"]) == 10
    assert finals == [True, False, False]
    # The point it stopped at is its last: the other concepts are added to it, the target kept.
    assert out["curve"][-1]["accuracy"] == {"red": 0.9, "blue": 0.5}
    marks = iter([0.0, 0.3, 0.9, 1.0, 1.0])
    full = relearn(
        pipe,
        data,
        RelearnConfig(steps=20, eval_every=5),
        lambda final=True: {"red": next(marks)},
        progress=False,
    )
    assert len(full["losses"]) == 20  # without the flag the budget is spent


def test_rates_from_a_sweep_come_with_disjoint_seeds(tmp_path):
    from erase.jobs import RelearnJob
    from erase.jobs.base import FieldError

    chosen = [{"optimizer": "sgd", "lr": 0.1, "seeds": [100, 101]}]
    (tmp_path / "relearn.json").write_text(json.dumps({"results": {"chosen": chosen}}))
    job = RelearnJob(run="x", optimizers={"sgd": ()}, lrs_from=str(tmp_path), seeds=(0, 1, 2))
    assert job.chosen_lrs() == {"sgd": (0.1,)} and [c.lr for c in job.configs()] == [0.1] * 3
    with pytest.raises(FieldError, match="chose the learning rates"):
        RelearnJob(run="x", optimizers={"sgd": ()}, lrs_from=str(tmp_path), seeds=(100,)).configs()
    with pytest.raises(FieldError, match="swept no adam"):
        RelearnJob(run="x", optimizers={"adam": ()}, lrs_from=str(tmp_path)).configs()
    with pytest.raises(FieldError, match="learning rate must be positive"):
        RelearnJob(run="x", optimizers={"sgd": ()})  # no rates and no sweep to take them from


def test_compare_gives_each_run_the_verdict_of_the_oracle_it_was_calibrated_on(tmp_path, capsys):
    """A run calibrated by `erase relearn` (its record holds the oracle's runs) is judged against
    them; an uncalibrated one says so; --oracle judges every run against the one given."""

    def record(folder, runs, oracle_runs=None, method="uce"):
        res = {
            "concept": "red",
            "method": method,
            "original": {"accuracy": {"red": 1.0}},
            "runs": runs,
            "summary": summarize(runs, "red", 1.0),
        }
        if oracle_runs is not None:
            res["oracle"] = {"runs": oracle_runs, "summary": summarize(oracle_runs, "red", 1.0)}
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "relearn.json").write_text(json.dumps({"results": res}))
        return tmp_path / folder

    held = record("held", [_run(None, False)], oracle_runs=[_run(30, False)])
    plain = record("plain", [_run(None, False)], method="esd-x")
    code, stdout, err = cli(["compare", held, plain], capsys)
    assert code == 0, err
    lines = {line.split("|")[1].strip(): line for line in stdout.splitlines() if line.startswith("| ")}
    assert "held: > 100 steps, while the oracle came back in 30" in lines["uce"], stdout
    assert "uncalibrated" in lines["esd-x"], stdout
    oracle = record("oracle", [_run(50, False)], method="oracle")
    code, stdout, err = cli(["compare", plain, "--oracle", oracle], capsys)
    assert code == 0, err
    assert "held: > 100 steps, while the oracle came back in 50" in stdout, stdout


def test_the_study_table_shows_the_start_the_verdict_and_the_others_before_and_after():
    """Seed 002's table (a study's relearning section): the concept where the attack began, with its
    count, each optimizer's steps and verdict against the oracle, the base check, and the other
    concepts at the start -> at the end."""
    from erase.relearn import base_check, verdict
    from erase.report.html import _relearn_sections

    def with_counts(run, others_end):
        for p in run["curve"]:
            hit = int(p["accuracy"]["red"] * 24)
            p |= {"hits": {"red": hit}, "n": {"red": 24}}
        run["curve"][0]["accuracy"]["blue"] = 0.9
        run["curve"][-1]["accuracy"]["blue"] = others_end
        return run

    erased = summarize([with_counts(_run(None, False), 0.5)], "red", 1.0)[0]
    oracle = summarize([with_counts(_run(20, False), 0.8)], "red", 1.0)[0]
    erased["verdict"] = verdict(erased, oracle)
    erased["base_check"] = base_check(summarize([with_counts(_run(0, False), 0.7)], "red", 1.0)[0])
    rows = [{"run": "uce-red", "method": "uce", "relearn": {"summary": [erased], "sweep": False}}]
    md = "\n".join(_relearn_sections(rows))
    assert (
        "| uce-red | uce | 0.00 (0/24) | > 100 (none came back) held @ 1; on the original: kept, "
        "others at the end 0.70 | 0.90 -> 0.50 |" in md
    ), md


def _scores(book, per_image: dict, seeds=(1000, 1001), **settings):
    """A score_concepts result as an edit's record holds it: per-image verdicts, prompt-major."""
    concepts = {n: {"per_image": v, "prompts": list(book.get(n).heldout)} for n, v in per_image.items()}
    base = {"seeds": list(seeds), "steps": 2, "guidance": 7.5, "judge": "toy", "neutral": None}
    return {"concepts": concepts, "settings": base | settings}


def test_a_point_is_read_from_scores_that_cover_it_and_only_then(toy_book):
    from types import SimpleNamespace

    from erase.relearn import Evaluator
    from erase.stats import wilson

    red, green = toy_book.get("red"), toy_book.get("green")
    judge = SimpleNamespace(spec="toy", none=None)
    ev = Evaluator(None, judge, red, [green], seeds=[1000, 1001], other_seeds=[1001], steps=2)
    n_red, n_green = 2 * len(red.heldout), len(green.heldout)
    # red: every image a hit but the first prompt's two; green: a hit under seed 1001 only.
    scores = _scores(toy_book, {"red": [0, 0] + [1] * (n_red - 2), "green": [0, 1] * n_green})
    point = ev.from_scores(scores)
    assert point["hits"] == {"red": n_red - 2, "green": n_green}
    assert point["n"] == {"red": n_red, "green": n_green}
    assert point["accuracy"]["green"] == 1.0 and point["ci95"]["red"] == list(wilson(n_red - 2, n_red))
    # Anything the scores do not cover is drawn instead.
    assert ev.from_scores(None) is None
    for changed in ({"steps": 3}, {"judge": "ViT-B-32:openai"}, {"seeds": [1000, 1002]}):
        assert ev.from_scores(scores | {"settings": scores["settings"] | changed}) is None, changed
    scores["concepts"]["green"]["prompts"].reverse()  # another concept file
    assert ev.from_scores(scores) is None
    del scores["concepts"]["green"]
    assert ev.from_scores(scores) is None


def test_relearning_reads_the_edits_scores_instead_of_drawing_them_again(
    tmp_path, capsys, toy_book, toy_judge
):
    from erase.delta import apply_delta
    from erase.models import load_pipeline, model_fingerprint
    from erase.relearn import Evaluator

    edit = tmp_path / "red-uce"
    edit_args = ["--method", "uce", "--eval-seeds", "1000-1001", "--eval-steps", 2, "--out", edit]
    code, _, err = cli(["concept", "red", *edit_args], capsys)
    assert code == 0, err

    out = tmp_path / "rl"
    args = [
        "relearn",
        edit,
        "--optimizers",
        "sgd",
        "--lrs",
        "0.1",
        "--steps",
        1,
        "--seeds",
        0,
        "--examples",
        2,
    ]
    args += [
        "--eval-seeds",
        "1000,1001",
        "--other-seeds",
        1000,
        "--eval-steps",
        2,
        "--oracle",
        "none",
        "--out",
        out,
    ]
    code, stdout, err = cli(args, capsys)
    assert code == 0, err
    assert f"original and erased start read from {edit / 'record.json'}" in stdout
    res = json.loads((out / "relearn.json").read_text())["results"]
    assert res["reused_scores"] == {
        "record": str(edit / "record.json"),
        "original": True,
        "erased start": True,
    }
    # The points read from the record are the ones drawing the images again gives.
    others = [toy_book.get(n) for n in res["images_per_point"] if n != "red"]
    pipe = load_pipeline("toy", device="cpu")
    ev = Evaluator(
        pipe, toy_judge, toy_book.get("red"), others, seeds=[1000, 1001], other_seeds=[1000], steps=2
    )
    assert res["original"] == json.loads(json.dumps(ev()))
    apply_delta(pipe.unet, edit / "delta.safetensors", model_fingerprint("toy"))
    assert res["runs"][0]["curve"][0] == {"step": 0, **json.loads(json.dumps(ev()))}
