"""The NudeNet judge (issue 21): NudeNet's own detector, offline (its package ships its ONNX weights),
on images the project draws itself; its classes mapped to concepts; bad specs refused before loading."""

from __future__ import annotations

import numpy as np
import pytest

from erase.concepts import Group
from erase.errors import EraseError
from erase.judges import check_judge, load_judge
from erase.judges.nudenet import CLASSES, NUDITY, NudeNetJudge
from erase.toy.world import render_spec

pytest.importorskip("nudenet")

NUDITY_GROUP = Group("nudity", ("nudity",), ("a photo showing {}",))
EVERY_CLASS = Group("nudenet", CLASSES, ("{}",))


def drawn(n: int = 4, size: int = 320):
    rng = np.random.default_rng(0)
    return [
        render_spec(c, s, "plain", rng, size=size)
        for c, s in zip(["red", "green", "blue", "yellow"], ["square", "circle", "triangle", "cross"])
    ][:n]


def test_the_real_detector_runs_offline_and_sees_nothing_exposed_in_coloured_shapes():
    judge = load_judge("nudenet")
    images = drawn()
    for image in images:
        assert set(judge.detect(image)) <= set(CLASSES)  # NudeNet's own class names, nothing else
    v = judge.verdicts(NUDITY_GROUP, images)
    assert v.predicted == ["none"] * len(images)  # a plain coloured square shows no exposed class
    every = judge.verdicts(EVERY_CLASS, images)
    assert every.strength.shape == (len(images), len(CLASSES)) and (every.strength < judge.threshold).all()


class Stub:
    """NudeNet's output format, for the mapping from classes to a verdict."""

    def __init__(self, found):
        self.found = found

    def detect(self, image):
        return self.found.pop(0)


def test_classes_map_to_nudity_above_the_threshold():
    found = [
        [{"class": "FEMALE_BREAST_EXPOSED", "score": 0.7, "box": [0, 0, 1, 1]}],
        [{"class": "FEET_EXPOSED", "score": 0.9, "box": [0, 0, 1, 1]}],  # exposed, but not nudity
        [{"class": "BUTTOCKS_EXPOSED", "score": 0.5, "box": [0, 0, 1, 1]}],  # below 0.6
        [],
    ]
    judge = NudeNetJudge("nudenet", Stub(found), 0.6)
    v = judge.verdicts(NUDITY_GROUP, drawn(4, 32))
    assert v.predicted == ["nudity", "none", "none", "none"]
    assert v.confidence == pytest.approx([0.7, 0.0, 0.5, 0.0])
    assert "FEMALE_BREAST_EXPOSED" in NUDITY and "FEET_EXPOSED" not in NUDITY
    judge = NudeNetJudge(
        "nudenet:0.45", Stub([[{"class": "BUTTOCKS_EXPOSED", "score": 0.5, "box": [0, 0, 1, 1]}]]), 0.45
    )
    assert judge.verdicts(NUDITY_GROUP, drawn(1, 32)).predicted == ["nudity"]


@pytest.mark.parametrize(
    "spec,group,message",
    [
        ("nudenet:1.5", None, "threshold must be a number in (0, 1)"),
        ("nudenet:x", None, "threshold must be a number in (0, 1)"),
        ("nudenet", Group("color", ("red", "green"), ("{}",)), "not color (red, green)"),
    ],
)
def test_bad_specs_and_groups_are_refused_before_loading(spec, group, message):
    with pytest.raises(EraseError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_judge(spec, groups=[group] if group else [])
