"""Erasure on the trained toy world (never on random weights), with settings that run on a CPU.

Scores: the toy CLIP on held-out phrasings x held-out seeds, the settings of the README's table
(`bench/erasure_table.py --seeds 1000-1002 --steps 15`). The base model's scores are computed once.
What these tests do not assert (UCE and CA with the default anchors) is measured and explained in
the README's table instead.
"""

import pytest

from erase.models import load_pipeline
from erase.score import score_concepts
from erase.unlearn import concept_inputs, run_method

COLORS = ["red", "green", "blue", "yellow"]
SHAPES = ["circle", "square", "triangle", "cross"]
SEEDS = [1000, 1001, 1002]
STEPS = 15
# Minutes each on 2 cores (an edit, then dozens of images scored): CI's efficacy tier runs them.
pytestmark = pytest.mark.efficacy


def accuracies(pipe, judge, book, names):
    res = score_concepts(pipe, judge, [book.get(n) for n in names], seeds=SEEDS, steps=STEPS, progress=False)
    return {n: r["accuracy"] for n, r in res["concepts"].items()}


@pytest.fixture(scope="module")
def base_colors(toy_pipe, toy_judge, toy_book):
    return accuracies(toy_pipe, toy_judge, toy_book, COLORS)


@pytest.fixture(scope="module")
def base_shapes(toy_pipe, toy_judge, toy_book):
    return accuracies(toy_pipe, toy_judge, toy_book, SHAPES)


def erase(method, concept, book, judge, names, anchor="default", seed=0, **overrides):
    pipe = load_pipeline("toy", device="cpu")
    target = book.get(concept)
    keep = [book.get(n) for n in target.group.labels if n != concept]
    run_method(
        pipe, method, concept_inputs(target, keep, anchor), overrides=overrides, seed=seed, progress=False
    )
    return accuracies(pipe, judge, book, names)


def test_the_base_model_draws_every_concept(base_colors, base_shapes):
    """The bars below are relative to these, so they must be high: the toy world's quality,
    checked on the same held-out images (288 more images in the slow test_toy quality test).
    Measured: colours 1.00, circle 0.86, square 0.94, triangle 1.00, cross 0.89."""
    for group in (base_colors, base_shapes):
        assert min(group.values()) >= 0.80, group
        assert sum(group.values()) / len(group) >= 0.90, group


def assert_colour_bar(after, base_colors):
    """The issue's colour bar: red at most 20%, the other colours within 25 points."""
    assert after["red"] <= 0.20, after
    for c in COLORS[1:]:
        assert after[c] >= base_colors[c] - 0.25, (c, base_colors[c], after[c])


def assert_shape_bar(after, base_shapes, base_colors):
    """The shape bar: cross at most 20%, the other shapes within 10 points, colours within 15."""
    assert after["cross"] <= 0.20, after
    for c in SHAPES[:3]:
        assert after[c] >= base_shapes[c] - 0.10, (c, base_shapes[c], after[c])
    for c in COLORS:
        assert after[c] >= base_colors[c] - 0.15, (c, base_colors[c], after[c])


def test_esd_x_erases_a_colour_and_keeps_the_other_colours(base_colors, toy_judge, toy_book):
    # Measured: red 1.00 -> 0.03, other colours 1.00 -> 0.98 (worst drop 0.06).
    after = erase("esd-x", "red", toy_book, toy_judge, COLORS)
    assert_colour_bar(after, base_colors)


def test_uce_replacing_a_colour_by_another_removes_it(base_colors, toy_judge, toy_book):
    """UCE maps the concept's keys/values onto a guide's. With the default guide ("a circle") the
    toy model still draws red (its colourless prompts are biased to red); a colour guide works."""
    after = erase("uce", "red", toy_book, toy_judge, COLORS, anchor="a blue {shape}")
    assert_colour_bar(after, base_colors)


def test_ca_with_prior_preservation_replacing_a_colour_removes_it(base_colors, toy_judge, toy_book):
    """Concept Ablation towards anchor images of the same shape in blue, drawn by the original
    model, with prior preservation and the preserve term (the toy setting). Measured (2 seeds):
    red 1.00 -> 0.00, the other colours 1.00, shapes within 0.05."""
    after = erase("ca", "red", toy_book, toy_judge, COLORS, anchor="a blue {shape}")
    assert_colour_bar(after, base_colors)


def test_uce_replacing_a_shape_by_another_removes_it(base_colors, base_shapes, toy_judge, toy_book):
    """The shape bar: at most 20% on held-out phrasings, other shapes within 10 points, colours
    within 15. Measured: cross 0.89 -> 0.08; circle 0.86 -> 0.89, square 0.94 -> 0.94, triangle 1.00,
    every colour 1.00. The default guide ("a red shape") leaves cross at 0.54-0.61: the toy's
    shapeless prompts still draw some crosses, as its colourless ones draw red."""
    after = erase("uce", "cross", toy_book, toy_judge, COLORS + SHAPES, anchor="a {color} square")
    assert_shape_bar(after, base_shapes, base_colors)


CA_SHAPE = {"anchor": "a {color} square", "lr": 5e-4, "preserve_weight": 2.0, "images_per_anchor": 16}


# About 8 minutes: three CA edits and 24 concept scores.
def test_ca_replacing_a_shape_by_another_removes_it(base_colors, base_shapes, toy_judge, toy_book):
    """The shape bar for Concept Ablation: the toy setting at lr 5e-4 with preserve_weight 2 and 16
    anchor images per prompt, guide "a {color} square". Single edit seeds differ by up to 0.1 on a
    concept here (36 images each), so cross must fall to the bar on every seed and the neighbours
    are held to it on the mean of three (108 images). Measured, seeds 0 / 1 / 2: cross 0.89 ->
    0.14 / 0.14 / 0.08; square 0.94 -> 0.89 / 0.89 / 0.83 (seed 2 misses the bar of 0.84 by one
    image); circle 0.92 / 0.81 / 0.81; triangle >= 0.94; colours >= 0.92. With 8 anchor images
    seed 1 missed on square and red (0.83, 0.81). It needed two fixes: no negative prompt for a
    guide (the target as negative took colours to 0.42) and the preserve term (without it shapes
    fell 0.05-0.11)."""
    runs = [erase("ca", "cross", toy_book, toy_judge, COLORS + SHAPES, seed=s, **CA_SHAPE) for s in (0, 1, 2)]
    assert all(r["cross"] <= 0.20 for r in runs), runs
    mean = {n: sum(r[n] for r in runs) / len(runs) for n in runs[0]}
    assert_shape_bar(mean, base_shapes, base_colors)


# About 2.5 minutes: 400 ESD iterations and 8 concepts scored.
def test_esd_x_with_twice_the_steps_and_lr_erases_a_shape(base_colors, base_shapes, toy_judge, toy_book):
    """The shape bar for ESD-x with the default anchors ("a red shape"), at 400 iterations and lr
    4e-3 (the toy setting, 200 at 2e-3, leaves cross at 0.39). Measured on 2 seeds: cross 0.89 ->
    0.17, circle 0.96, square 0.96, triangle 1.00, colours >= 0.88."""
    after = erase("esd-x", "cross", toy_book, toy_judge, COLORS + SHAPES, steps=400, lr=4e-3)
    assert_shape_bar(after, base_shapes, base_colors)


def test_default_anchors_keep_colours_when_erasing_a_shape(base_colors, base_shapes, toy_judge, toy_book):
    """Negative guidance removes everything a prompt names: erasing "a red cross" against the
    empty prompt also erases red. The default anchors ("a red shape") keep colours."""
    names = [*COLORS, "cross"]
    base = base_colors | base_shapes
    anchored = erase("esd-x", "cross", toy_book, toy_judge, names)
    assert anchored["cross"] <= base["cross"] - 0.4, anchored
    for c in COLORS:
        assert anchored[c] >= base[c] - 0.15, (c, base[c], anchored[c])
    bare = erase("esd-x", "cross", toy_book, toy_judge, names, anchor=None, preserve_weight=0.0)
    assert min(bare[c] for c in COLORS) < min(anchored[c] for c in COLORS), (bare, anchored)
