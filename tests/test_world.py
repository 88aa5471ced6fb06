import numpy as np
import pytest

from erase.errors import EraseError
from erase.toy.world import AXES, World, render, render_batch, select


def test_samples_are_reproducible_one_by_one():
    w = World(seed=0)
    a, b = w.sample(123), World(seed=0).sample(123)
    assert a == b
    assert np.array_equal(np.asarray(render(a)), np.asarray(render(b)))
    # A sample does not depend on which others are drawn with it.
    batch = render_batch(w.samples([5, 123, 7]))
    assert np.array_equal(batch[1], np.asarray(render(a)))


def test_another_world_seed_draws_other_images():
    a, b = World(seed=0).sample(3), World(seed=1).sample(3)
    assert not np.array_equal(np.asarray(render(a)), np.asarray(render(b)))


def test_world_is_balanced_and_captions_name_their_concepts():
    samples = World(size=480).samples()
    for axis, values in AXES.items():
        counts = {v: sum(s.concepts()[axis] == v for s in samples) for v in values}
        assert len(set(counts.values())) == 1, counts
    for s in samples:
        words = s.caption.split()
        assert s.color in words or s.shape in words
        if s.style != "plain":
            assert s.style in words


def test_colours_keep_their_hue_on_a_light_background():
    w = World()
    for s in w.samples(range(48)):
        img = np.asarray(render(s)).astype(int)
        corner = img[:3, :3].reshape(-1, 3)
        assert corner.min() > 200 and np.ptp(corner.mean(0)) < 15  # light, unsaturated
        ink = img.reshape(-1, 3)[np.abs(img.reshape(-1, 3) - corner.mean(0)).sum(1) > 120]
        r, g, b = ink.mean(0)
        dominant = {
            "red": r > g + 60 and r > b + 60,
            "green": g > r + 40 and g > b + 40,
            "blue": b > r + 60 and b > g + 40,
            "yellow": r > b + 100 and g > b + 100,
        }
        assert dominant[s.color], (s, ink.mean(0))


def test_exclusions_remove_exactly_what_they_name():
    w = World(size=480)
    kept = select(w, ["color=red"], [1, 2])
    assert all(s.color != "red" for s in kept)
    assert {1, 2}.isdisjoint(s.id for s in kept)
    assert len(kept) == 480 - 120 - sum(w.sample(i).color != "red" for i in (1, 2))


@pytest.mark.parametrize("bad", ["color", "colour=red", "color=purple", "shape="])
def test_bad_exclusion_is_refused(bad):
    with pytest.raises(EraseError, match="exclusion"):
        select(World(size=48), [bad])


def test_out_of_range_ids_and_excluding_everything_are_refused():
    with pytest.raises(EraseError, match="out of range"):
        select(World(size=48), [], [48])
    with pytest.raises(EraseError, match="every training sample"):
        select(World(size=48), [], range(48))
