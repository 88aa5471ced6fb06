"""The fit judge (``erase.toy.fit``): the renderer's shapes read back, and what is no shape read as none."""

import hashlib

import numpy as np
import pytest
from PIL import Image, ImageDraw

from erase.concepts import load_concepts
from erase.errors import EraseError
from erase.judges import check_judge, load_judge
from erase.score import classify_concept
from erase.toy.fit import MIN_IOU, NONE, read
from erase.toy.world import COLORS, SHAPES, STYLES, World, render_batch, render_spec


def test_the_renderer_draws_what_it_drew_when_the_toy_model_was_trained():
    # The fit shares the renderer's geometry (world.shape_mask); moving it there must not move a
    # pixel of the training images (hash recorded with the renderer before the move).
    pixels = render_batch(World().samples(range(0, 4800, 50))).tobytes()
    assert (
        hashlib.sha256(pixels).hexdigest()
        == "97e01a297e145da2303367af0e97581ac3ebb530deff212d898a811026b8c8d3"
    )


@pytest.mark.parametrize("style", STYLES)
def test_every_rendered_shape_colour_and_style_is_read_as_its_shape(style):
    for shape in SHAPES:
        for i, color in enumerate(COLORS):
            for k in range(3):
                r = read(render_spec(color, shape, style, np.random.default_rng([11, i, k])))
                assert r.shape == shape and r.fit >= MIN_IOU, (style, shape, color, r)


def _canvas(*boxes, ellipse=None):
    im = Image.new("RGB", (32, 32), (235, 235, 235))
    d = ImageDraw.Draw(im)
    for box in boxes:
        d.rectangle(box, fill=(215, 40, 40))
    if ellipse:
        d.ellipse(ellipse, fill=(40, 80, 215))
    return im


@pytest.mark.parametrize(
    "image",
    [
        _canvas(),  # nothing drawn
        _canvas([4, 14, 27, 17]),  # a bar
        _canvas(ellipse=[4, 11, 27, 20]),  # a flat ellipse
        _canvas([8, 6, 13, 25], [8, 20, 25, 25]),  # an L
        _canvas(*[[x, y, x + 1, y + 1] for x in range(4, 28, 6) for y in range(4, 28, 6)]),  # dots
    ],
    ids=["blank", "bar", "ellipse", "L", "dots"],
)
def test_what_is_no_shape_of_the_world_is_read_as_none(image):
    assert read(image).shape == NONE


def test_the_toy_fit_judge_counts_like_the_clip_judge_and_refuses_a_colour():
    book = load_concepts("toy")
    judge = load_judge("toy-fit")
    rng = np.random.default_rng(0)
    images = [render_spec("red", "cross", "plain", rng) for _ in range(3)] + [_canvas([4, 14, 27, 17])]
    res = classify_concept(judge, book.get("cross"), images, ["a cross"] * 4)
    assert (res["hits"], res["n"], res["per_image"]) == (3, 4, [1, 1, 1, 0])
    assert res["predicted"] == {"cross": 3, NONE: 1} and 0 < res["ci95"][0] < 0.75 < res["ci95"][1] < 1
    assert res["clip_score"] is None and res["neutral"] == NONE
    with pytest.raises(EraseError, match="reads the toy world's shapes only"):
        classify_concept(judge, book.get("red"), images, ["a red shape"] * 4)
    with pytest.raises(EraseError, match=r"reads the toy world's shapes only.*--judge toy"):
        check_judge("toy-fit", groups=[book.get("red").group])  # before anything is loaded
    with pytest.raises(EraseError, match="says 'none' by itself"):
        check_judge("toy-fit", neutral="an image")


def test_erase_score_with_the_toy_fit_judge_records_its_readings(tmp_path):
    from erase.jobs import ScoreJob, run

    out = tmp_path / "score"
    res = run(
        ScoreJob(concept="cross", against=("circle",), judge="toy-fit", seeds=(2000,), steps=6, out=out)
    )
    record = res.record
    settings, concepts = record["results"]["settings"], record["results"]["concepts"]
    assert settings["judge"] == "toy-fit" and settings["neutral"] == NONE
    for name in ("cross", "circle"):
        r = concepts[name]
        assert r["clip_score"] is None and sum(r["predicted"].values()) == r["n"] == len(r["per_image"])
        assert r["hits"] == sum(r["per_image"]) == r["predicted"].get(name, 0)
        assert set(r["predicted"]) <= {*SHAPES, NONE}
