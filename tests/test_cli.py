import json
import subprocess
import sys

import pytest

from erase.cli import main
from erase.errors import EraseError
from erase.specs import parse_seeds


def run(args, capsys):
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_generate_writes_images_grid_and_record(tmp_path, capsys):
    out = tmp_path / "gen"
    code, _stdout, _ = run(
        [
            "generate",
            "--prompt",
            "a red circle",
            "--prompt",
            "a blue square",
            "--seeds",
            "0,1",
            "--steps",
            "4",
            "--device",
            "cpu",
            "--out",
            str(out),
        ],
        capsys,
    )
    assert code == 0
    assert sorted(p.name for p in (out / "images").iterdir()) == [
        "p000_s0.png",
        "p000_s1.png",
        "p001_s0.png",
        "p001_s1.png",
    ]
    assert (out / "grid.png").is_file()
    rec = json.loads((out / "record.json").read_text())
    for key in (
        "config",
        "seeds",
        "versions",
        "prompt_hashes",
        "wall_seconds",
        "peak_memory",
        "trainable_parameters",
        "results",
    ):
        assert key in rec
    assert rec["seeds"] == [0, 1] and rec["versions"]["diffusers"]


def test_score_prints_a_table_and_writes_a_record(tmp_path, capsys):
    out = tmp_path / "score"
    code, stdout, _ = run(
        [
            "score",
            "--concept",
            "red",
            "--against",
            "green",
            "--seeds",
            "1000",
            "--steps",
            "8",
            "--device",
            "cpu",
            "--out",
            str(out),
        ],
        capsys,
    )
    assert code == 0 and "red" in stdout and "95% CI" in stdout
    rec = json.loads((out / "record.json").read_text())
    assert set(rec["results"]["concepts"]) == {"red", "green"}
    assert rec["prompt_hashes"]["red"]["n"] == 12


BAD = [
    (["generate", "--model", "no/such/thing", "--prompt", "x"], "neither a folder"),
    (["generate", "--model", "./missing-folder", "--prompt", "x"], "neither a folder"),
    (["generate", "--prompt-file", "missing.txt"], "cannot read prompt file"),
    (["generate", "--prompt-file", "EMPTY"], "has no prompts"),
    (["generate"], "no prompts given"),
    (["generate", "--prompt", "   "], "empty prompt"),
    (["generate", "--prompt", "x", "--steps", "0"], "--steps must be positive"),
    (["generate", "--prompt", "x", "--seeds", "-1"], "non-negative"),
    (["generate", "--prompt", "x", "--seeds", "a,b"], "must be integers"),
    (["generate", "--prompt", "x", "--seeds", "5-2"], "is empty"),
    (["score", "--concept", "purple"], "not defined"),
    (["score", "--concept", ""], "empty"),
    (["score", "--concept", "red", "--against", "red"], "both the target"),
    (["score", "--concept", "red", "--concepts", "nosuch"], "not found"),
    (["score", "--concept", "red", "--steps", "-3"], "--steps must be positive"),
    (
        ["score", "--concept", "red", "--judge", "bogus"],
        "not toy, toy-fit, nudenet[:THRESHOLD], an open_clip NAME:PRETRAINED",
    ),
    (["toy", "train", "--out", "X", "--exclude", "color=purple"], "exclusion"),
    (["toy", "train", "--out", "X", "--exclude-ids", "999999"], "out of range"),
    (["toy", "train", "--out", "X", "--stages", "unet,decoder"], "stages"),
    (["frobnicate"], "invalid choice"),
]


@pytest.mark.parametrize("args,message", BAD, ids=[" ".join(a)[:40] for a, _ in BAD])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(args, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "EMPTY").write_text("\n# nothing\n")
    before = set(tmp_path.iterdir())
    with pytest.raises(SystemExit) as exc:  # argparse's own errors exit directly
        sys.exit(main(args))
    _, err = capsys.readouterr()
    assert exc.value.code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("erase: error:") and message in lines[0], err
    assert set(tmp_path.iterdir()) == before


def test_no_traceback_from_the_real_entry_point(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "erase", "score", "--concept", "mauve"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr


def test_refuses_to_clobber_a_finished_run(tmp_path, capsys):
    out = tmp_path / "done"
    out.mkdir()
    (out / "record.json").write_text("{}")
    code, _, err = run(["generate", "--prompt", "x", "--out", str(out)], capsys)
    assert code == 2 and "--overwrite" in err
    assert (out / "record.json").read_text() == "{}"


def test_seed_parsing():
    assert parse_seeds("0,2,5-7") == [0, 2, 5, 6, 7]
    with pytest.raises(EraseError):
        parse_seeds(",")


def test_concept_writes_a_delta_that_apply_and_the_loader_accept(tmp_path, capsys):
    import torch

    from erase.delta import read_meta
    from erase.models import load_pipeline

    run_dir = tmp_path / "red-uce"
    code, _stdout, err = run(
        ["concept", "red", "--method", "uce", "--no-score", "--device", "cpu", "--out", str(run_dir)], capsys
    )
    assert code == 0, err
    meta = read_meta(run_dir / "delta.safetensors")
    assert meta["method"] == "uce" and meta["kind"] == "unlearning" and meta["base_model"] == "toy"
    assert meta["concepts"] == {"erase": "red", "preserve": ["green", "blue", "yellow"]}
    rec = json.loads((run_dir / "record.json").read_text())
    assert rec["trainable_parameters"] > 0 and rec["prompt_hashes"]["targets"]["n"] == 4

    code, _, err = run(["apply", str(run_dir), "--out", str(tmp_path / "full")], capsys)
    assert code == 0, err
    full = load_pipeline(str(tmp_path / "full"), device="cpu")
    edited = load_pipeline(f"toy+{run_dir}", device="cpu")
    base = load_pipeline("toy", device="cpu")
    name = next(n for n in meta_names(run_dir))
    assert torch.equal(dict(full.unet.named_parameters())[name], dict(edited.unet.named_parameters())[name])
    assert not torch.equal(
        dict(base.unet.named_parameters())[name], dict(edited.unet.named_parameters())[name]
    )


def meta_names(run_dir):
    from safetensors import safe_open

    with safe_open(str(run_dir / "delta.safetensors"), framework="pt") as f:
        return list(f.keys())


CONCEPT_BAD = [
    (["concept", "red", "--method", "esd-z"], "unknown method 'esd-z'"),
    (["concept", " "], "empty"),
    (["concept", "red", "--preserve", "green,red"], "both erased and in --preserve"),
    (["concept", "red", "--anchor", "red"], "is the concept being erased"),
    (["concept", "red", "--method", "uce", "--steps", "5"], "uce has no setting 'steps'"),
    (["concept", "red", "--lr", "-1"], "lr must be positive"),
    (["concept", "red", "--set", "etaa=2"], "has no setting 'etaa'"),
    (["apply", "missing-run", "--out", "x"], "does not exist"),
    (["score", "--concept", "red", "--model", "toy+missing-run"], "does not exist"),
]


@pytest.mark.parametrize("args,message", CONCEPT_BAD, ids=[" ".join(a)[:40] for a, _ in CONCEPT_BAD])
def test_bad_erasure_input_is_one_line_exit_2(args, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run(args, capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and message in lines[0], err
    assert list(tmp_path.iterdir()) == []


def test_delta_for_another_base_is_refused(tmp_path, capsys):
    from tests import tiny

    run_dir = tmp_path / "red-uce"
    assert run(["concept", "red", "--method", "uce", "--no-score", "--out", str(run_dir)], capsys)[0] == 0
    tiny.sd1().save_pretrained(tmp_path / "other")
    code, _, err = run(
        [
            "generate",
            "--model",
            f"{tmp_path / 'other'}+{run_dir}",
            "--prompt",
            "x",
            "--out",
            str(tmp_path / "g"),
        ],
        capsys,
    )
    assert code == 2 and "was made from model 'toy'" in err
    assert not (tmp_path / "g").exists()
