import numpy as np
import pytest

from erase.concepts import load_concepts, read_prompt_list
from erase.errors import EraseError
from erase.score import classify_concept, score_concepts
from erase.stats import wilson
from erase.toy.world import render_spec


def test_classifier_tells_a_rendered_red_from_a_green(toy_judge, toy_book):
    rng = np.random.default_rng(5)
    reds = [render_spec("red", "circle", "plain", rng) for _ in range(16)]
    greens = [render_spec("green", "circle", "plain", rng) for _ in range(16)]
    red = toy_book.get("red")
    prompts = ["a red circle"] * 16
    assert classify_concept(toy_judge, red, reds, prompts)["accuracy"] == 1.0
    res = classify_concept(toy_judge, red, greens, prompts)
    assert res["accuracy"] == 0.0 and res["predicted"] == {"green": 16}
    # 0 of 16 is a count with an interval that says how sure that zero is, not [0, 0].
    assert res["hits"] == 0 and res["ci95"] == list(wilson(0, 16)) and res["ci95"][1] > 0.15
    assert res["clip_score"] < classify_concept(toy_judge, red, reds, prompts)["clip_score"]


def test_score_reports_each_concept_with_an_interval(toy_pipe, toy_judge, toy_book):
    res = score_concepts(
        toy_pipe,
        toy_judge,
        [toy_book.get("red"), toy_book.get("circle")],
        seeds=[1000, 1001],
        steps=10,
        progress=False,
    )
    red = res["concepts"]["red"]
    assert red["n"] == len(toy_book.get("red").heldout) * 2
    assert red["ci95"][0] <= red["accuracy"] <= red["ci95"][1]
    assert red["accuracy"] >= 0.75 and res["concepts"]["circle"]["accuracy"] >= 0.75


def test_concept_files_are_validated(tmp_path):
    book = load_concepts("toy")
    assert book.get("red").group.name == "color"
    assert "a drawing of a red circle" in book.get("red").heldout
    with pytest.raises(EraseError, match="not defined"):
        book.get("purple")
    with pytest.raises(EraseError, match="empty"):
        book.get(" ")
    with pytest.raises(EraseError, match="not found"):
        load_concepts(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("groups: [1, 2")
    with pytest.raises(EraseError, match="not valid YAML"):
        load_concepts(bad)
    bad.write_text(
        "groups:\n  c:\n    labels: [a]\n    templates: ['no slot']\n    prompts: [x]\n    heldout: [y]\n"
    )
    with pytest.raises(EraseError, match="exactly one"):
        load_concepts(bad)


def test_prompt_files(tmp_path):
    f = tmp_path / "p.txt"
    f.write_text("# comment\n\na red circle\n  a blue square \n")
    assert read_prompt_list(f) == ["a red circle", "a blue square"]
    f.write_text("# only a comment\n\n")
    with pytest.raises(EraseError, match="no prompts"):
        read_prompt_list(f)
    with pytest.raises(EraseError, match="cannot read"):
        read_prompt_list(tmp_path / "missing.txt")


def test_a_neutral_label_takes_what_shows_no_colour_and_leaves_a_red_red(toy_judge, toy_book):
    """Without it a noise image is forced into some colour (8 of 8 'green' on this judge); with
    'an image' as the neutral label the noise goes there, and clear reds stay red."""
    from PIL import Image

    from erase.judges import load_judge

    rng = np.random.default_rng(5)
    reds = [render_spec("red", "circle", "plain", rng) for _ in range(16)]
    noise = [Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)) for _ in range(8)]
    red, neutral = toy_book.get("red"), load_judge("toy", device="cpu", neutral="an image")
    forced = classify_concept(toy_judge, red, noise, ["a red circle"] * 8)
    assert "an image" not in forced["predicted"] and sum(forced["predicted"].values()) == 8
    kept = classify_concept(neutral, red, noise, ["a red circle"] * 8)
    assert kept["predicted"].get("an image", 0) >= 6 and kept["neutral"] == "an image"
    assert classify_concept(neutral, red, reds, ["a red circle"] * 16)["accuracy"] == 1.0
