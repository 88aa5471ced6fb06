"""The fit judge (``erase.toy.fit``): the renderer's shapes read back, and what is no shape read as none."""

import hashlib

import numpy as np
import pytest
from PIL import Image, ImageDraw

from erase.errors import EraseError
from erase.toy.fit import MIN_IOU, NONE, classify_shape, read
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


def test_classify_shape_counts_like_the_clip_judge_and_refuses_a_colour():
    rng = np.random.default_rng(0)
    images = [render_spec("red", "cross", "plain", rng) for _ in range(3)] + [_canvas([4, 14, 27, 17])]
    res = classify_shape("cross", images)
    assert (res["hits"], res["n"], res["per_image"]) == (3, 4, [1, 1, 1, 0])
    assert res["predicted"] == {"cross": 3, NONE: 1} and 0 < res["ci95"][0] < 0.75 < res["ci95"][1] < 1
    with pytest.raises(EraseError, match="reads shapes only"):
        classify_shape("red", images)
