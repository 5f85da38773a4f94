import numpy as np
import pytest
import torch

from esae import shapes
from esae.groups import rotate as rotate_images
from esae.shapes import NUM_ORIENTATIONS, SHAPES


@pytest.fixture(scope="module")
def data():
    return shapes.make_dataset(300, seed=3)


def _quadrant(images, p):
    rows, cols = shapes._POSITION_SLICES[p]
    return images[..., rows, cols]


def test_public_constants():
    assert len(SHAPES) == 8 and len(set(SHAPES)) == 8
    assert NUM_ORIENTATIONS == (2, 2, 4, 4, 4, 4, 4, 4)
    assert SHAPES[:2] == ("rectangle", "diagonal")


def test_orientation_counts_from_rendered_sprites():
    """Count the distinct images of each shape under the four rotations, from rendered images."""
    for s in range(len(SHAPES)):
        img = shapes.render(np.full((1, 4), s), np.zeros((1, 4), int))[0, 0]
        distinct = {tuple(_quadrant(rotate_images(img, k), k % 4).flatten().tolist()) for k in range(4)}
        assert len(distinct) == NUM_ORIENTATIONS[s], SHAPES[s]
        assert len(distinct) > 1  # no shape is rotation-invariant


def test_sprites_of_different_shapes_are_far_apart():
    bank = shapes.sprites().reshape(8, 4, -1)
    flat = bank.reshape(32, -1)
    dist = torch.cdist(flat, flat)
    shape_id = torch.arange(8).repeat_interleave(4)
    other = shape_id[:, None] != shape_id[None, :]
    # every sprite differs from every sprite of another shape by much more than anti-aliasing noise
    assert dist[other].min() > 5.0
    assert bank.amin() >= 0 and bank.amax() <= 1


def test_render_shapes_and_range(data):
    assert data.images.shape == (300, 1, 64, 64) and data.images.dtype == torch.float32
    assert data.images.min() >= 0 and data.images.max() <= 1
    assert data.shapes.shape == data.orientations.shape == (300, 4)
    assert (data.orientations < np.asarray(NUM_ORIENTATIONS)[data.shapes]).all()
    # each quadrant holds exactly its sprite
    bank = shapes.sprites()
    for p in range(4):
        assert torch.equal(_quadrant(data.images[:, 0], p), bank[data.shapes[:, p], data.orientations[:, p]])


def test_make_dataset_is_seeded_and_covers_labels():
    a, b, c = shapes.make_dataset(2000, 0), shapes.make_dataset(2000, 0), shapes.make_dataset(2000, 1)
    assert torch.equal(a.images, b.images) and np.array_equal(a.shapes, b.shapes)
    assert not np.array_equal(a.shapes, c.shapes)
    assert set(np.unique(a.shapes)) == set(range(8))
    for s in range(8):
        assert set(np.unique(a.orientations[a.shapes == s])) == set(range(NUM_ORIENTATIONS[s]))


@pytest.mark.parametrize("k", [1, 2, 3])
def test_group_action_is_pixel_exact(data, k):
    rotated = shapes.rotate(data, k)
    assert torch.equal(rotated.images, rotate_images(data.images, k))
    assert torch.equal(rotated.images, shapes.render(rotated.shapes, rotated.orientations))
    # the shape at position p moves to (p + k) mod 4
    for p in range(4):
        assert np.array_equal(rotated.shapes[:, (p + k) % 4], data.shapes[:, p])


def test_group_action_composes(data):
    twice = shapes.rotate(shapes.rotate(data, 1), 1)
    once = shapes.rotate(data, 2)
    assert torch.equal(twice.images, once.images)
    assert np.array_equal(twice.shapes, once.shapes) and np.array_equal(twice.orientations, once.orientations)
    full = shapes.rotate(data, 4)
    assert torch.equal(full.images, data.images) and np.array_equal(full.orientations, data.orientations)
    back = shapes.rotate(shapes.rotate(data, 3), -3)
    assert np.array_equal(back.orientations, data.orientations)


def test_rotation_moves_quadrants_counter_clockwise():
    s = np.array([[2, 0, 0, 0]])  # a triangle at position 0 (top-right), rectangles elsewhere
    o = np.zeros((1, 4), int)
    img = shapes.render(s, o)[0, 0]
    assert _quadrant(img, 0).sum() > 0
    rotated = rotate_images(img, 1)
    assert torch.equal(_quadrant(rotated, 1), shapes.sprites()[2, 1])  # top-left, pointing left
    assert shapes.POSITION_NAMES[1] == "top-left"


def test_orbit_keys_and_disjoint_heldout(data):
    keys = data.orbit_keys()
    for k in range(4):
        assert np.array_equal(shapes.rotate(data, k).orbit_keys(), keys)
    train = shapes.make_dataset(3000, 0)
    held = shapes.make_dataset(500, 1, disjoint_from=train)
    assert len(held) == 500
    assert not set(held.orbit_keys().tolist()) & set(train.orbit_keys().tolist())
    # the same seed without the constraint would have overlapped orbits with a big enough train set
    big = shapes.make_dataset(20000, 0)
    free = shapes.make_dataset(2000, 1)
    assert set(free.orbit_keys().tolist()) & set(big.orbit_keys().tolist())


def test_subsets(data):
    sub = data[np.arange(10, 20)]
    assert len(sub) == 10 and torch.equal(sub.images, data.images[10:20])
    assert len(data[5]) == 1 and np.array_equal(data[-1].shapes, data.shapes[-1:])
    mask = data.shapes[:, 0] == 0
    assert len(data[mask]) == mask.sum()


def test_task_counts_and_names():
    tasks = shapes.probing_tasks()
    assert len(tasks) == 180
    counts = {g: sum(t.group == g for t in tasks) for g in shapes.TASK_GROUPS}
    assert counts == {"S": 8, "SO": 28, "SP": 32, "SPO": 112}
    assert len({t.name for t in tasks}) == 180
    assert [t.group for t in tasks] == sorted((t.group for t in tasks), key=shapes.TASK_GROUPS.index)
    assert shapes.ProbingTask("SPO", 6, position=1, orientation=2).name == "SPO(arrow, p=1, o=2)"


def test_task_labels_match_definitions(data):
    tasks = shapes.probing_tasks()
    labels = shapes.task_labels(data)
    assert labels.shape == (300, 180) and labels.dtype == bool
    for j, t in enumerate(tasks):
        for i in range(0, 300, 37):
            quads = [(data.shapes[i, p], data.orientations[i, p], p) for p in range(4)]
            expect = any(s == t.shape and (t.position is None or p == t.position)
                         and (t.orientation is None or o == t.orientation) for s, o, p in quads)
            assert labels[i, j] == expect, (t.name, i)
    sub = shapes.task_labels(data, tasks[8:10])
    assert np.array_equal(sub, labels[:, 8:10])


@pytest.mark.parametrize("k", [1, 2, 3])
def test_task_labels_transform_with_rotation(data, k):
    tasks = shapes.probing_tasks()
    index = {t: j for j, t in enumerate(tasks)}
    before, after = shapes.task_labels(data), shapes.task_labels(shapes.rotate(data, k))
    for j, t in enumerate(tasks):
        n_o = NUM_ORIENTATIONS[t.shape]
        moved = shapes.ProbingTask(t.group, t.shape,
                                   None if t.position is None else (t.position + k) % 4,
                                   None if t.orientation is None else (t.orientation + k) % n_o)
        assert np.array_equal(after[:, index[moved]], before[:, j]), t.name
        if t.group == "S":  # invariant tasks
            assert t.invariant and np.array_equal(after[:, j], before[:, j])


def test_negative_shares_match_the_sampling_distribution():
    labels = shapes.task_labels(shapes.make_dataset(20000, 5))
    for j, t in enumerate(shapes.probing_tasks()):
        assert abs((1 - labels[:, j].mean()) - shapes.expected_negative_share(t)) < 0.015, t.name
    assert abs(shapes.expected_negative_share(shapes.ProbingTask("S", 0)) - (7 / 8) ** 4) < 1e-12


def test_bad_input_raises_clear_errors():
    with pytest.raises(ValueError, match="n must be an int >= 1, got 0"):
        shapes.make_dataset(0, 0)
    with pytest.raises(ValueError, match=r"shapes must be an integer array of shape \(n, 4\)"):
        shapes.render(np.zeros((2, 3), int), np.zeros((2, 3), int))
    with pytest.raises(ValueError, match="orientations must have the same shape"):
        shapes.render(np.zeros((2, 4), int), np.zeros((3, 4), int))
    with pytest.raises(ValueError, match=r"shapes\[0, 2\] must be in 0..7, got 8"):
        shapes.render(np.array([[0, 1, 8, 2]]), np.zeros((1, 4), int))
    with pytest.raises(ValueError, match=r"orientations\[0, 1\] must be in 0..1, got 2"):
        shapes.render(np.array([[2, 0, 2, 2]]), np.array([[3, 2, 0, 0]]))  # a rectangle has 2
    with pytest.raises(ValueError, match="must hold integers"):
        shapes.render(np.zeros((1, 4)), np.zeros((1, 4)))
    with pytest.raises(ValueError, match="k must be an int"):
        shapes.rotate_labels(np.zeros((1, 4), int), np.zeros((1, 4), int), 1.5)
    with pytest.raises(ValueError, match="group must be one of"):
        shapes.ProbingTask("X", 0)
    with pytest.raises(ValueError, match="orientation must be an int in \\[0, 1\\], got 3"):
        shapes.ProbingTask("SO", 0, orientation=3)
    with pytest.raises(ValueError, match="position must be given exactly"):
        shapes.ProbingTask("S", 0, position=1)
    with pytest.raises(ValueError, match=r"images must have shape \(n, 1, 64, 64\)"):
        shapes.ShapesDataset(torch.zeros(2, 64, 64), np.zeros((2, 4), int), np.zeros((2, 4), int))


def test_upright_canonical_image_is_the_generated_one_and_rotating_it_reproduces_the_sample():
    data = shapes.make_dataset(400, 11, layout="upright")
    assert data.layout == "upright" and data.rotations.shape == (400,)
    assert set(np.unique(data.rotations).tolist()) == {0, 1, 2, 3}
    canon = data.canonical()
    # the generated image: every shape upright, drawn from its labels
    assert (canon.orientations == 0).all() and (canon.rotations == 0).all()
    assert torch.equal(canon.images, shapes.render(canon.shapes, np.zeros_like(canon.shapes)))
    for p in range(4):
        sel = data.rotations == p
        assert torch.equal(rotate_images(canon.images[sel], p), data.images[sel])  # pixel-exact
        s, o = shapes.rotate_labels(canon.shapes[sel], canon.orientations[sel], p)
        assert np.array_equal(s, data.shapes[sel]) and np.array_equal(o, data.orientations[sel])
    # all shapes of a sample share the orientation p (mod their number of orientations)
    assert (data.orientations == data.rotations[:, None] % np.asarray(NUM_ORIENTATIONS)[data.shapes]).all()
    with pytest.raises(ValueError, match="upright"):
        shapes.make_dataset(5, 0, layout="independent").canonical()
    with pytest.raises(ValueError, match="layout"):
        shapes.make_dataset(5, 0, layout="sideways")


def test_pools_hold_out_label_sets():
    train = shapes.make_dataset(3000, 0, layout="upright", pool="train")
    held = shapes.make_dataset(500, 1, layout="upright", pool="heldout")
    probe = shapes.make_dataset(500, 2, layout="upright", pool="probe")
    keys = [set(d.orbit_keys().tolist()) for d in (train, held, probe)]
    assert not keys[0] & keys[1] and not keys[0] & keys[2] and not keys[1] & keys[2]
    # under upright an orbit is a label set: the canonical shapes identify it
    label_sets = [set(map(tuple, d.canonical().shapes.tolist())) for d in (train, held)]
    assert not label_sets[0] & label_sets[1]
    all_sets = shapes.upright_label_sets()
    assert all_sets[0].shape == (4096, 4)
    counts = np.bincount(shapes.orbit_pool(*all_sets), minlength=3) / 4096
    assert np.allclose(counts, shapes.POOL_FRACTIONS, atol=0.03)
    with pytest.raises(ValueError, match="pool"):
        shapes.make_dataset(5, 0, pool="test")


def test_upright_class_balance_matches_its_expectation():
    data = shapes.make_dataset(20000, 4, layout="upright")
    tasks = shapes.probing_tasks()
    negative = 1 - shapes.task_labels(data, tasks).mean(0)
    expected = np.array([shapes.expected_negative_share(t, "upright") for t in tasks])
    assert np.abs(negative - expected).max() < 0.02
