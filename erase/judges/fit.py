"""``toy-fit``: the toy world's shapes, read by fitting the renderer's own shapes to each image
(``erase.toy.fit``); "none" when no shape fits well enough.

The CLIP judges must name one of a group's labels for every image, so a blob an attack brings out
of an erased model is called whichever shape it resembles most. This judge can say that an image
shows no shape of the world. It reads the toy world's shapes only: colours and styles, and images
of real models, are refused before anything is loaded.
"""

from __future__ import annotations

import numpy as np

from erase.errors import EraseError
from erase.judges.api import Judge, Verdicts

NAME = "toy-fit"


def accepts(spec: str) -> bool:
    return spec == NAME


def check(spec: str, *, neutral: str | None = None) -> None:
    if neutral is not None:
        raise EraseError(f"judge {NAME} says 'none' by itself (no shape fits); leave out the neutral label")


def cannot_read(spec: str, group) -> str | None:
    from erase.toy.world import SHAPES

    foreign = [label for label in group.labels if label not in SHAPES]
    if foreign:
        return (
            f"reads the toy world's shapes only ({', '.join(SHAPES)}), not {group.name} "
            f"({', '.join(foreign[:3])}); use --judge toy for it"
        )
    return None


def load(spec: str, *, device: str | None = None, neutral: str | None = None) -> FitJudge:
    return FitJudge()


class FitJudge(Judge):
    spec = NAME

    def __init__(self):
        from erase.toy.fit import NONE

        self.none = NONE

    def check_group(self, group) -> None:
        why = cannot_read(self.spec, group)
        if why:
            raise EraseError(f"judge {self.spec}: {why}")

    def verdicts(self, group, images, prompts=None) -> Verdicts:
        from erase.toy.fit import read

        self.check_group(group)
        readings = [read(im) for im in images]
        return Verdicts(
            predicted=[r.shape for r in readings],
            # The best shape's fit, also when it falls short and the verdict is "none".
            confidence=[r.fit for r in readings],
            strength=np.array(
                [[r.fits[label] for label in group.labels] for r in readings], dtype=np.float32
            ),
        )
