"""The bad-input matrix (issue 7): one table of user mistakes across every command.

Each case goes through the real entry point (``erase.cli.main``) and must end with exit status 2 and
exactly one line on stderr, ``erase: error: ...``, that names the thing at fault and says what to do,
with no traceback and nothing left behind: no output folder, no temporary sibling, no stray file.
Most cases fail during validation, before a model loads; the few that need a model use the toy world.
"""

from __future__ import annotations

import errno
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from erase.cli import main

# Setup helpers: each builds the bad input inside the test's folder -----------------------------------


def _delta(path: Path, **meta) -> Path:
    """A small erase delta; only its metadata matters to the cases that use it."""
    from erase.delta import FORMAT

    meta = {
        "format": FORMAT,
        "base_model": "toy",
        "base_fingerprint": "0" * 64,
        "method": "esd-x",
        "kind": "unlearning",
        "concepts": {"erase": "red"},
    } | meta
    save_file({"w": torch.zeros(4)}, str(path), metadata={"erase": json.dumps(meta)})
    return path


def bias_only_delta(tmp: Path) -> None:
    from erase.models import model_fingerprint

    _delta(tmp / "bias.safetensors", base_fingerprint=model_fingerprint("toy"))  # one 1-D tensor


def other_base_delta(tmp: Path) -> None:
    _delta(tmp / "sd.safetensors", base_model="CompVis/stable-diffusion-v1-4", base_fingerprint="ab" * 32)


def truncated_delta(tmp: Path) -> None:
    path = _delta(tmp / "cut.safetensors")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 10])  # a copy that stopped short


def data_level_delta(tmp: Path) -> None:
    _delta(tmp / "ga.safetensors", method="ga", kind="untraining", concepts={"forget": "toy:ids=0-3"})


def good_delta(tmp: Path) -> None:
    _delta(tmp / "ok.safetensors")


def cross_delta(tmp: Path) -> None:
    _delta(tmp / "cross.safetensors", concepts={"erase": "cross"})


def _images(folder: Path, captions: bool = True) -> None:
    folder.mkdir()
    for k, colour in enumerate(["red", "blue"]):
        Image.new("RGB", (32, 32), colour).save(folder / f"{k}.png")
    if captions:
        (folder / "captions.txt").write_text("0.png\ta red square\n1.png\ta blue square\n")


def captioned_images(tmp: Path) -> None:
    _images(tmp / "imgs")


def uncaptioned_images(tmp: Path) -> None:
    _images(tmp / "imgs", captions=False)


def empty_prompt_file(tmp: Path) -> None:
    (tmp / "prompts.txt").write_text("\n# only a comment\n\n")


def a_file(tmp: Path) -> None:
    (tmp / "afile").write_text("not a folder\n")


def no_relearn_json(tmp: Path) -> None:
    (tmp / "run").mkdir()
    (tmp / "run" / "record.json").write_text("{}\n")


def _toy_copy(tmp: Path) -> Path:
    from erase.toy import WEIGHTS

    shutil.copytree(WEIGHTS / "pipeline", tmp / "sd")
    return tmp / "sd" / "unet" / "diffusion_pytorch_model.safetensors"


def interrupted_download(tmp: Path) -> None:
    """What an interrupted hub download leaves: the weight file under its temporary name."""
    weights = _toy_copy(tmp)
    data = weights.read_bytes()
    weights.unlink()
    weights.with_name(weights.name + ".incomplete").write_bytes(data[: len(data) // 3])


def truncated_weights(tmp: Path) -> None:
    weights = _toy_copy(tmp)
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])


def _concept_file(tmp: Path, labels: list[str], heldout: str) -> None:
    book = {
        "groups": {
            "color": {
                "labels": labels,
                "templates": ["a {} shape"],
                "prompts": ["a {concept} circle"],
                "heldout": [heldout],
            }
        }
    }
    (tmp / "concepts.yaml").write_text(json.dumps(book))  # JSON is YAML, and escapes stay exact


def judge_drops_label(tmp: Path) -> None:
    # A byte-order mark pasted in as a label: the CLIP tokenizer (ftfy) drops it, so the judge's
    # classifier would score that label from "a  shape".
    _concept_file(tmp, ["red", "\ufeff"], "a drawing of a {concept} circle")


def concept_word_cut(tmp: Path) -> None:
    # The toy text encoder reads 16 tokens: the concept word sits past the cut.
    _concept_file(
        tmp, ["red", "blue"], "a very very very very very very very very very very big {concept} circle"
    )


def disk_full(tmp: Path, monkeypatch) -> None:
    """The disk fills up while the record is half written."""
    real = Path.write_text

    def half_then_enospc(self, text, *args, **kwargs):
        real(self, text[: len(text) // 2], *args, **kwargs)
        raise OSError(errno.ENOSPC, "No space left on device", str(self))

    monkeypatch.setattr(Path, "write_text", half_then_enospc)


# The matrix -------------------------------------------------------------------------------------------
# (id, argv with {tmp} for the test's folder, substrings the one line must hold (the thing at fault and
# the fix), setup). Every command that writes gets --out {tmp}/out, so a leftover is easy to spot.

OUT = ["--out", "{tmp}/out"]
GEN = ["generate", "--prompt", "a red circle", "--seeds", "0", "--steps", "2", "--device", "cpu"]
CASES: list[tuple[str, list[str], tuple[str, ...], Callable | None]] = [
    # generate
    ("generate-unknown-model", [*GEN, "--model", "no/such/thing", *OUT], ("no/such/thing", "use toy"), None),
    ("generate-missing-folder", [*GEN, "--model", "./nowhere", *OUT], ("./nowhere", "check the path"), None),
    (
        "generate-empty-prompt-file",
        ["generate", "--prompt-file", "{tmp}/prompts.txt", *OUT],
        ("prompts.txt", "one prompt per line"),
        empty_prompt_file,
    ),
    ("generate-blank-prompt", ["generate", "--prompt", "  ", *OUT], ("empty prompt", "at least one"), None),
    (
        "generate-interrupted-download",
        [*GEN, "--model", "{tmp}/sd", *OUT],
        ("sd/unet", "re-download"),
        interrupted_download,
    ),
    (
        "generate-truncated-weights",
        [*GEN, "--model", "{tmp}/sd", *OUT],
        ("sd/unet", "re-download"),
        truncated_weights,
    ),
    (
        "generate-prompt-longer-than-encoder",
        ["generate", "--prompt", "a " + "very " * 16 + "red circle", "--seeds", "0", "--steps", "2", *OUT],
        ("16", "shorten"),
        None,
    ),
    ("generate-disk-full", [*GEN, *OUT], ("No space left", "free space"), disk_full),
    ("generate-out-under-a-file", [*GEN, "--out", "{tmp}/afile/out"], ("afile", "writable --out"), a_file),
    ("generate-out-in-proc", [*GEN, "--out", "/proc/erase-bad-input/out"], ("/proc", "writable --out"), None),
    ("generate-bad-seeds", [*GEN[:-6], "--seeds", "5-2", *OUT], ("5-2", "LOW <= HIGH"), None),
    # score
    ("score-unknown-concept", ["score", "--concept", "purple", *OUT], ("purple", "defined:"), None),
    ("score-empty-concept", ["score", "--concept", "", *OUT], ("empty", "--concept red"), None),
    (
        "score-target-in-against",
        ["score", "--concept", "red", "--against", "blue,red", *OUT],
        ("red", "list it once"),
        None,
    ),
    (
        "score-unknown-judge",
        ["score", "--concept", "red", "--judge", "bogus", *OUT],
        ("bogus", "e.g. ViT-L-14"),
        None,
    ),
    (
        "score-a-colour-by-the-shape-judge",
        ["score", "--concept", "red", "--judge", "toy-fit", *OUT],
        ("toy-fit", "shapes only", "--judge toy"),
        None,
    ),
    (
        "score-shape-judge-given-a-neutral-label",
        ["score", "--concept", "cross", "--judge", "toy-fit", "--neutral", "an image", *OUT],
        ("toy-fit", "leave out the neutral label"),
        None,
    ),
    (
        "score-label-the-judge-drops",
        [
            "score",
            "--concept",
            "red",
            "--concepts",
            "{tmp}/concepts.yaml",
            "--seeds",
            "1000",
            "--steps",
            "2",
            *OUT,
        ],
        ("\\ufeff", "judge", "remove"),
        judge_drops_label,
    ),
    (
        "score-concept-word-cut",
        [
            "score",
            "--concept",
            "red",
            "--concepts",
            "{tmp}/concepts.yaml",
            "--seeds",
            "1000",
            "--steps",
            "2",
            *OUT,
        ],
        ("red circle' would be cut off", "shorten"),
        concept_word_cut,
    ),
    # concept
    (
        "concept-unknown-method",
        ["concept", "red", "--method", "esd-z", *OUT],
        ("esd-z", "choose one of"),
        None,
    ),
    ("concept-empty", ["concept", " ", *OUT], ("empty", "--concept red"), None),
    (
        "concept-lr-not-finite",
        ["concept", "red", "--method", "esd-x", "--lr", "inf", *OUT],
        ("--lr", "finite"),
        None,
    ),
    (
        "concept-setting-not-finite",
        ["concept", "red", "--method", "esd-x", "--set", "eta=nan", *OUT],
        ("eta", "finite"),
        None,
    ),
    (
        "concept-setting-given-twice",
        ["concept", "red", "--method", "esd-x", "--eta", "2", "--set", "eta=3", *OUT],
        ("--set", "eta", "give it once"),
        None,
    ),
    (
        "concept-also-preserved",
        ["concept", "red", "--preserve", "green,red", *OUT],
        ("red", "remove it from --preserve"),
        None,
    ),
    (
        "concept-anchor-is-target",
        ["concept", "red", "--anchor", "red", *OUT],
        ("anchor 'red'", "pick another"),
        None,
    ),
    ("concept-unknown-setting", ["concept", "red", "--set", "etaa=2", *OUT], ("etaa", "it has"), None),
    (
        "concept-setting-of-the-wrong-type",
        ["concept", "red", "--set", "low_memory=maybe", *OUT],
        ("low_memory must be bool", "true or false"),
        None,
    ),
    (
        "concept-out-under-a-file",
        ["concept", "red", "--out", "{tmp}/afile/run"],
        ("afile", "writable --out"),
        a_file,
    ),
    # data
    (
        "data-forget-equals-retain",
        ["data", "--forget", "{tmp}/imgs", "--retain", "{tmp}/imgs", "--method", "ga", *OUT],
        ("retain set", "retain other"),
        captioned_images,
    ),
    ("data-empty-forget", ["data", "--forget", "", *OUT], ("forget set is empty", "--forget FOLDER"), None),
    (
        "data-images-without-captions",
        ["data", "--forget", "{tmp}/imgs", "--method", "ga", *OUT],
        ("imgs", "one caption per image"),
        uncaptioned_images,
    ),
    ("data-ids-out-of-range", ["data", "--forget", "toy:ids=999999", *OUT], ("999999", "out of range"), None),
    (
        "data-concept-method",
        ["data", "--forget", "toy:color=red:n=4", "--method", "esd-x", *OUT],
        ("esd-x", "erase concept"),
        None,
    ),
    # apply
    (
        "apply-delta-for-another-base",
        ["apply", "{tmp}/sd.safetensors", "--model", "toy", *OUT],
        ("CompVis/stable-diffusion-v1-4", "apply it to the model it was made from"),
        other_base_delta,
    ),
    (
        "apply-corrupted-delta",
        ["apply", "{tmp}/cut.safetensors", *OUT],
        ("cut.safetensors", "re-run"),
        truncated_delta,
    ),
    ("apply-missing-run", ["apply", "{tmp}/no-run", *OUT], ("no-run", "pass a delta file"), None),
    # export
    ("export-missing-run", ["export", "{tmp}/no-run", *OUT], ("no-run", "pass a delta file"), None),
    (
        "export-nothing-a-lora-carries",
        ["export", "{tmp}/bias.safetensors", *OUT],
        ("cannot carry", "erase apply"),
        bias_only_delta,
    ),
    (
        "export-delta-for-another-base",
        ["export", "{tmp}/sd.safetensors", "--model", "toy", *OUT],
        ("CompVis/stable-diffusion-v1-4", "apply it to the model it was made from"),
        other_base_delta,
    ),
    (
        "export-agree-out-of-range",
        ["export", "{tmp}/ok.safetensors", "--agree", "1.5", *OUT],
        ("--agree", "(0, 1]"),
        good_delta,
    ),
    (
        "export-rank-zero",
        ["export", "{tmp}/ok.safetensors", "--rank", "0", *OUT],
        ("--rank", "positive"),
        good_delta,
    ),
    (
        "export-unknown-format",
        ["export", "{tmp}/ok.safetensors", "--format", "ckpt", *OUT],
        ("ckpt", "lora"),
        good_delta,
    ),
    # serve
    ("serve-missing-run", ["serve", "{tmp}/no-run"], ("no-run", "pass a delta file"), None),
    (
        "serve-bad-port",
        ["serve", "{tmp}/ok.safetensors", "--port", "70000"],
        ("--port", "0 to 65535"),
        good_delta,
    ),
    (
        "serve-judge-that-cannot-read-the-concept",
        ["serve", "{tmp}/ok.safetensors", "--judge", "nudenet"],
        ("nudenet", "use a CLIP judge"),
        good_delta,
    ),
    # relearn
    (
        "relearn-unknown-optimizer",
        ["relearn", "{tmp}/ok.safetensors", "--optimizers", "sgd,rmsprop", *OUT],
        ("rmsprop", "choose from"),
        good_delta,
    ),
    (
        "relearn-lr-for-unlisted-optimizer",
        ["relearn", "{tmp}/ok.safetensors", "--optimizers", "sgd", "--lrs", "adam=1e-4", *OUT],
        ("adam", "--optimizers"),
        good_delta,
    ),
    (
        "relearn-data-level-run-without-concept",
        ["relearn", "{tmp}/ga.safetensors", *OUT],
        ("ga.safetensors", "--concept NAME"),
        data_level_delta,
    ),
    (
        "relearn-corrupted-delta",
        ["relearn", "{tmp}/cut.safetensors", *OUT],
        ("cut.safetensors", "re-run"),
        truncated_delta,
    ),
    (
        "relearn-examples-without-captions",
        ["relearn", "{tmp}/ok.safetensors", "--data", "{tmp}/imgs", *OUT],
        ("imgs", "one caption per image"),
        lambda tmp: (good_delta(tmp), uncaptioned_images(tmp)),
    ),
    # attack
    (
        "attack-unknown-attack",
        ["attack", "{tmp}/ok.safetensors", "--attack", "inversion,telepathy", *OUT],
        ("telepathy", "choose one of"),
        good_delta,
    ),
    (
        "attack-unknown-setting",
        ["attack", "{tmp}/ok.safetensors", "--set", "stepz=10", *OUT],
        ("stepz", "no attack"),
        good_delta,
    ),
    (
        "attack-setting-for-an-attack-not-run",
        ["attack", "{tmp}/ok.safetensors", "--set", "prompt.steps=10", *OUT],
        ("prompt", "--attack"),
        good_delta,
    ),
    (
        "attack-negative-steps",
        ["attack", "{tmp}/ok.safetensors", "--set", "inversion.steps=-5", *OUT],
        ("steps", "positive"),
        good_delta,
    ),
    (
        "attack-two-word-init",
        ["attack", "{tmp}/ok.safetensors", "--set", "init=red thing", *OUT],
        ("init", "one word"),
        good_delta,
    ),
    (
        "attack-init-is-the-concept-word",
        ["attack", "{tmp}/ok.safetensors", "--set", "init=Red", *OUT],
        ("'Red'", "concept's own word"),
        good_delta,
    ),
    (
        "attack-t-min-negative",
        ["attack", "{tmp}/ok.safetensors", "--set", "t_min=-1", *OUT],
        ("t_min", "0 or more"),
        good_delta,
    ),
    (
        "attack-ring-a-bell-eta-not-finite",
        ["attack", "{tmp}/ok.safetensors", "--attack", "ring-a-bell", "--set", "eta=nan", *OUT],
        ("eta", "finite"),
        good_delta,
    ),
    (
        "attack-relearn-unknown-optimizer",
        ["attack", "{tmp}/ok.safetensors", "--attack", "relearn", "--set", "optimizer=rmsprop", *OUT],
        ("rmsprop", "choose one of"),
        good_delta,
    ),
    (
        "attack-data-level-run-without-concept",
        ["attack", "{tmp}/ga.safetensors", *OUT],
        ("ga.safetensors", "--concept NAME"),
        data_level_delta,
    ),
    ("attack-missing-run", ["attack", "{tmp}/no-run", *OUT], ("no-run", "pass a delta file"), None),
    (
        "attack-a-colour-by-the-shape-judge",
        ["attack", "{tmp}/ok.safetensors", "--judge", "toy-fit", *OUT],
        ("toy-fit", "not color (red"),
        good_delta,
    ),
    (
        "audit-unrelated-rows-the-judge-cannot-read",
        ["audit", "{tmp}/cross.safetensors", "--judge", "toy-fit", *OUT],
        ("toy-fit", "--unrelated 0"),
        cross_delta,
    ),
    (
        "audit-data-level-run-without-concept",
        ["audit", "{tmp}/ga.safetensors", *OUT],
        ("ga.safetensors", "--concept NAME"),
        data_level_delta,
    ),
    # compare
    ("compare-not-a-relearning", ["compare", "{tmp}/run", *OUT], ("run", "erase relearn"), no_relearn_json),
    # toy
    (
        "toy-train-unknown-exclusion",
        ["toy", "train", "--exclude", "color=purple", *OUT],
        ("purple", "color"),
        None,
    ),
    (
        "toy-train-ids-out-of-range",
        ["toy", "train", "--exclude-ids", "999999", *OUT],
        ("999999", "out of range"),
        None,
    ),
    ("toy-train-unknown-stage", ["toy", "train", "--stages", "unet,decoder", *OUT], ("decoder", "vae"), None),
    (
        "toy-oracle-forget-folder",
        ["toy", "oracle", "--forget", "{tmp}/imgs", *OUT],
        ("--forget", "toy:color=red:n=32"),
        captioned_images,
    ),
    (
        "toy-oracle-unknown-exclusion",
        ["toy", "oracle", "--exclude", "color=purple", *OUT],
        ("purple", "color"),
        None,
    ),
    ("toy-eval-bad-seeds", ["toy", "eval", "--seeds", "a,b", *OUT], ("a,b", "1000-1007"), None),
    (
        "toy-eval-interrupted-download",
        ["toy", "eval", "--model", "{tmp}/sd", "--device", "cpu", *OUT],
        ("sd/unet", "re-download"),
        interrupted_download,
    ),
]


def _screen(err: str) -> list[str]:
    """The lines a terminal shows: a progress bar redraws itself with carriage returns and, once
    done, is wiped (leave=False), so only the text after a line's last return is seen."""
    return [seen for line in err.split("\n") if (seen := line.rsplit("\r", 1)[-1].strip())]


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.mark.parametrize("argv,needles,setup", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input(argv, needles, setup, tmp_path, capfd, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a default output folder (runs/...) would land here and be seen
    if setup is not None:
        if setup.__code__.co_argcount == 2:
            setup(tmp_path, monkeypatch)
        else:
            setup(tmp_path)
    before = _tree(tmp_path)
    capfd.readouterr()
    try:
        code = main([a.replace("{tmp}", str(tmp_path)) for a in argv])
    except SystemExit as e:  # argparse's usage errors exit directly
        code = e.code
    _, err = capfd.readouterr()
    lines = _screen(err)
    assert code == 2, err
    assert "Traceback" not in err
    assert len(lines) == 1 and lines[0].startswith("erase: error: "), err
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"
    assert not (tmp_path / "out").exists()
    assert _tree(tmp_path) == before, "partial output left behind"


def test_the_matrix_covers_every_command():
    commands = {c[1][0] if c[1][0] != "toy" else "toy " + c[1][1] for c in CASES}
    assert commands >= {
        "generate",
        "score",
        "concept",
        "data",
        "apply",
        "export",
        "serve",
        "relearn",
        "attack",
        "compare",
        "toy train",
        "toy oracle",
        "toy eval",
    }
    assert len(CASES) >= 25
