"""Data-level untraining: forget/retain sets, the HAMU update, the guard, metrics and `erase data`."""

import json
import math

import pytest
import torch

from erase.cli import main
from erase.data import resolve_sets, toy_ids
from erase.errors import EraseError
from erase.methods.base import EraseInputs
from erase.methods.hamu import hamu_step, verdict
from erase.toy.world import World
from erase.train import Diverged
from erase.unlearn import run_method
from erase.untrain import heldout_twins, mia_auc
from tests import tiny


# Sets -------------------------------------------------------------------------------------------
def test_toy_specs_name_exact_training_samples():
    world = World()
    red = toy_ids("toy:color=red")
    assert len(red) == world.size // 4 and all(world.sample(i).color == "red" for i in red)
    assert toy_ids("toy:color=red:shape=circle") == [i for i in red if world.sample(i).shape == "circle"]
    sub = toy_ids("toy:color=red:n=32", seed=3)
    assert len(sub) == 32 and set(sub) <= set(red) and sub == toy_ids("toy:color=red:n=32", seed=3)
    assert sub != toy_ids("toy:color=red:n=32", seed=4)
    assert toy_ids("toy:ids=5,1-3") == [5, 1, 2, 3]
    rest = toy_ids("toy:rest:n=50", exclude=set(sub))
    assert len(rest) == 50 and not set(rest) & set(sub)


def test_heldout_twins_share_concepts_but_were_never_trained_on():
    world, big = World(), World(size=2 * World().size)
    for i in (0, 17, 4799):
        (twin,) = heldout_twins([i], world)
        assert twin >= world.size
        assert big.sample(twin).concepts() == world.sample(i).concepts()


def test_resolved_sets_carry_images_captions_and_ids():
    forget, retain = resolve_sets("toy:color=red:n=4", "toy:rest:n=6", seed=0)
    assert len(forget.images) == 4 and len(retain.images) == 6 and forget.ids and retain.ids
    assert not set(forget.ids) & set(retain.ids)
    assert all(
        "red" in p or "circle" in p or "square" in p or "triangle" in p or "cross" in p
        for p in forget.prompts
    )


SET_BAD = [
    (("", None), "forget set is empty"),
    (("toy:ids=99999", None), "out of range"),
    (("toy:color=purple", None), "color must be one of"),
    (("toy:ids=0:color=blue", None), "names no training sample"),  # sample 0 is red
    (("toy:", None), "names no samples"),
    (("toy:color=red:n=0", None), "n must be a positive integer"),
    (("toy:ids=1,2", "toy:ids=1,2"), "retain set lies entirely inside the forget set"),
    (("NOFOLDER", None), "does not exist"),
]


@pytest.mark.parametrize("specs,message", SET_BAD, ids=[m for _, m in SET_BAD])
def test_bad_sets_are_refused(specs, message, tmp_path):
    forget, retain = (s.replace("NOFOLDER", str(tmp_path / "none")) if s else s for s in specs)
    with pytest.raises(EraseError, match=message):
        resolve_sets(forget, retain)


def test_images_without_captions_are_refused(tmp_path):
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    with pytest.raises(EraseError, match=r"forget folder .* has no captions.txt"):
        resolve_sets(str(tmp_path), None)
    (tmp_path / "captions.txt").write_text("a.png\t\n")  # listed, but with no caption
    with pytest.raises(EraseError, match="every line needs a file name and a caption"):
        resolve_sets(str(tmp_path), None)
    (tmp_path / "captions.txt").unlink()
    (tmp_path / "metadata.jsonl").write_text('{"file_name": "a.png"}\n')
    with pytest.raises(EraseError, match="every line needs a file name and a caption"):
        resolve_sets(str(tmp_path), None)


def caption_folder(folder, colours):
    from PIL import Image

    folder.mkdir()
    for c in colours:
        Image.new("RGB", (8, 8), c).save(folder / f"{c}.png")
    (folder / "captions.txt").write_text("".join(f"{c}.png\ta {c} square\n" for c in colours))
    return str(folder)


def test_folder_sets_refuse_an_empty_forget_set_and_a_retain_set_inside_it(tmp_path):
    forget = caption_folder(tmp_path / "f", ["red", "blue"])
    with pytest.raises(EraseError, match="retain set lies entirely inside the forget set"):
        resolve_sets(forget, caption_folder(tmp_path / "r", ["blue"]))
    # A partial overlap: forgetting wins, the shared pair is only forgotten.
    f, r = resolve_sets(forget, caption_folder(tmp_path / "r2", ["blue", "green"]))
    assert len(f.images) == 2 and r.prompts == ("a green square",) and f.ids is None
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "captions.txt").write_text("\n")
    with pytest.raises(EraseError, match="lists no images"):
        resolve_sets(str(tmp_path / "empty"), None)


# HAMU's update ----------------------------------------------------------------------------------
def triple(p, g_r, g_f):
    return (
        torch.tensor(p, dtype=torch.float64),
        torch.tensor(g_r, dtype=torch.float64),
        torch.tensor(g_f, dtype=torch.float64),
    )


def test_hamu_easy_branch_is_plain_retain_descent():
    # g_r and g_f opposed: descending the retain loss raises the forget loss by itself.
    p, g_r, g_f = triple([0.0, 0.0], [1.0, 0.0], [-1.0, 0.0])
    log = hamu_step([(p, g_r, g_f)], lr=0.1, B=0.01)
    assert log["easy"] == 1 and not log["unavoidable"]
    assert torch.allclose(p, torch.tensor([-0.1, 0.0], dtype=torch.float64))  # -R g_r/|g_r|, R = 0.1


def test_hamu_rectified_branch_buys_exactly_B_within_the_radius():
    # g_r and g_f aligned: the step must spend part of the radius on forgetting.
    p, g_r, g_f = triple([0.0, 0.0], [1.0, 1.0], [1.0, 0.0])
    lr, B = 0.1, 0.05
    log = hamu_step([(p, g_r, g_f)], lr=lr, B=B)
    assert log["rectified"] == 1
    assert float(g_f @ p) == pytest.approx(B)  # first-order forget increase is B
    assert float(p.norm()) == pytest.approx(lr * math.sqrt(2))  # ||delta|| = R = lr ||g_r||
    assert float(g_r @ p) < float(g_r @ (B * g_f))  # the rest of the radius descends the retain loss
    # kappa = cos 45 deg; reach without retain damage = R |g_f| sin 45 = 0.1 >= B: avoidable ...
    assert log["kappa"] == pytest.approx(1 / math.sqrt(2)) and not log["unavoidable"]
    # ... but asking for more than 0.1 (feasible up to R |g_f| = 0.141) makes retain damage unavoidable.
    p, g_r, g_f = triple([0.0, 0.0], [1.0, 1.0], [1.0, 0.0])
    log = hamu_step([(p, g_r, g_f)], lr=lr, B=0.12)
    assert log["rectified"] == 1 and log["unavoidable"] and float(g_r @ p) > 0


def test_hamu_infeasible_step_changes_nothing():
    p, g_r, g_f = triple([1.0, 2.0], [1.0, 0.0], [0.0, 0.1])
    log = hamu_step([(p, g_r, g_f)], lr=0.1, B=1.0)  # B / |g_f| = 10 > R = 0.1
    assert log["infeasible"] == 1 and not log["applied"]
    assert p.tolist() == [1.0, 2.0]


def test_hamu_verdict_names_easy_and_hard_pairs():
    assert verdict([0.1, 0.0], [False, False]).startswith("easy pair")
    assert verdict([0.8, 0.9], [True, True]).startswith("hard pair")
    assert verdict([0.5, 0.4], [True, False, False]).startswith("mostly easy")
    # With the retain set's own alignment as the scale: the ratio decides, not kappa's size.
    assert verdict([0.7, 0.7], [False, False], [0.9, 0.9]).startswith("easy pair")  # 0.78
    assert verdict([0.85, 0.85], [False, True], [0.8, 0.82]).startswith("hard pair")  # 1.05
    assert verdict([0.3, 0.3], [False, False], [0.29]).startswith("hard pair")  # small, but alike


# Guard and registry kinds -----------------------------------------------------------------------
def test_ascent_is_stopped_by_the_guard_with_the_last_good_weights():
    pipe = tiny.sd1()
    pipe.set_progress_bar_config(disable=True)
    forget, _ = resolve_sets("toy:color=red:n=4", None)
    overrides = {"lr": 1.0, "optimizer": "sgd", "steps": 200, "max_forget_loss": 50.0}
    with pytest.raises(
        Diverged,
        match=r"ga: the (forget loss reached|trained weights' norm grew) .*; stopped and kept the weights of step \d+",
    ):
        run_method(pipe, "ga", EraseInputs(forget=forget), overrides=overrides, progress=False)
    assert all(torch.isfinite(v).all() for v in pipe.unet.state_dict().values())


def test_untraining_methods_refuse_missing_sets():
    pipe = tiny.sd1()
    forget, _ = resolve_sets("toy:color=red:n=2", None)
    with pytest.raises(EraseError, match="hamu needs a retain set"):
        run_method(pipe, "hamu", EraseInputs(forget=forget), progress=False)
    with pytest.raises(EraseError, match="ga needs a forget set"):
        run_method(pipe, "ga", EraseInputs(), progress=False)


def test_mia_auc():
    assert mia_auc(torch.tensor([0.1, 0.2]), torch.tensor([0.3, 0.4])) == 1.0  # members fit better
    assert mia_auc(torch.tensor([0.3, 0.4]), torch.tensor([0.1, 0.2])) == 0.0
    assert mia_auc(torch.tensor([0.1, 0.3]), torch.tensor([0.2, 0.2])) == 0.5


# The command ------------------------------------------------------------------------------------
def test_data_command_writes_an_untraining_delta_and_its_metrics(tmp_path, capsys):
    from erase.delta import read_meta

    out = tmp_path / "run"
    code = main(
        [
            "data",
            "--forget",
            "toy:color=red:n=8",
            "--retain",
            "toy:rest:n=16",
            "--method",
            "graddiff",
            "--steps",
            "2",
            "--oracle",
            "none",
            "--out",
            str(out),
        ]
    )
    stdout, err = capsys.readouterr()
    assert code == 0, err
    meta = read_meta(out / "delta.safetensors")
    assert (
        meta["kind"] == "untraining"
        and meta["method"] == "graddiff"
        and len(meta["concepts"]["forget_ids"]) == 8
    )
    rec = json.loads((out / "record.json").read_text())
    rows = rec["results"]["metrics"]
    assert set(rows) == {"original", "edited"}
    for r in rows.values():
        assert {"forget_loss", "heldout_loss", "loss_gap", "mia_auc", "retain_loss"} <= set(r)
    assert rows["edited"]["forget_loss"] != rows["original"]["forget_loss"]
    assert "declared kind: untraining" in stdout and rec["config"]["reconstructed"] is False


DATA_BAD = [
    (["--method", "esd-x"], "concept-level (unlearning) method; use `erase concept`"),
    (["--method", "nope"], "unknown method 'nope'"),
    (["--forget", ""], "the forget set is empty"),
    (["--forget", "toy:ids=99999"], "out of range"),
    (["--forget", "toy:ids=0:color=blue"], "names no training sample"),  # sample 0 is red
    (["--forget", "toy:ids=1,2", "--retain", "toy:ids=1,2"], "entirely inside the forget set"),
    (["--set", "alpha=-1", "--method", "graddiff"], "alpha must be >= 0"),
    (["--set", "lr=fast"], "lr must be float (1e-4), got 'fast'"),
]


def test_set_reads_numbers_written_without_a_dot():
    from erase.specs import parse_sets

    # YAML 1.1 alone reads 1e-5 as a string, which the config would then refuse.
    assert parse_sets(["lr=1e-5", "budget=2E-2", "params=all", "steps=3"]) == {
        "lr": 1e-5,
        "budget": 0.02,
        "params": "all",
        "steps": 3,
    }


@pytest.mark.parametrize("extra,message", DATA_BAD, ids=[m[:30] for _, m in DATA_BAD])
def test_bad_data_input_is_one_line_exit_2(extra, message, tmp_path, capsys):
    args = ["data", "--forget", "toy:color=red:n=4", *extra, "--out", str(tmp_path / "out")]
    # argparse keeps the last --forget, so a case's own --forget wins.
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and message in err, err
    assert not (tmp_path / "out").exists()


def test_a_concept_wide_forget_set_is_scored_against_the_unlearning_oracle():
    from erase.recipes.oracle import forget_oracle
    from erase.untrain import describe_oracle, oracle_kind

    found = {}
    for spec in ("toy:color=red", "toy:color=red:n=32"):
        path, key = forget_oracle(spec, toy_ids(spec, seed=0))
        assert path is not None, f"the shipped oracle for {spec} is missing"
        found[spec] = (key, oracle_kind(f"toy+{path}"))
    assert found["toy:color=red"] == ("color=red", "unlearning")
    assert found["toy:color=red:n=32"][0].startswith("ids32-")
    assert found["toy:color=red:n=32"][1] == "untraining"
    line = describe_oracle("untraining", "toy+color=red", "unlearning")
    assert "(unlearning oracle)" in line and "every training sample of a concept" in line
    assert describe_oracle("untraining", None, None).endswith("none (scores without the ideal reference)")
    assert oracle_kind("toy") is None
