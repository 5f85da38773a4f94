import pytest
import torch

from esae import groups
from esae.groups import C4, CyclicGroup


@pytest.mark.parametrize("n", [1, 2, 3, 4, 7])
def test_cyclic_group_axioms(n):
    G = CyclicGroup(n)
    E = G.elements
    assert len(E) == n
    for a in E:
        assert G.compose(G.identity, a) == a == G.compose(a, G.identity)
        assert G.compose(a, G.inverse(a)) == G.identity
        assert G.power(a, n) == G.identity
        for b in E:
            assert G.compose(a, b) == G.compose(b, a)
            for c in E:
                assert G.compose(G.compose(a, b), c) == G.compose(a, G.compose(b, c))


def test_regular_representation_is_a_homomorphism():
    R = C4.regular_representation()
    for a in C4.elements:
        for b in C4.elements:
            assert torch.equal(R[a] @ R[b], R[C4.compose(a, b)])
    assert torch.equal(torch.linalg.matrix_power(R[1], 4), torch.eye(4))


def test_action_composes_pixel_exactly():
    x = torch.rand(3, 1, 12, 12)
    assert torch.equal(C4.act(0, x), x)
    for a in C4.elements:
        for b in C4.elements:
            assert torch.equal(C4.act(a, C4.act(b, x)), C4.act(C4.compose(a, b), x))
    assert torch.equal(groups.rotate(x, 4), x)
    assert torch.equal(groups.rotate(x, -1), groups.rotate(x, 3))


def test_rotation_is_counter_clockwise():
    x = torch.zeros(4, 4)
    x[0, 3] = 1  # top-right corner
    assert groups.rotate(x, 1)[0, 0] == 1  # moves to the top-left


def test_c2_acts_by_half_turns():
    x = torch.rand(5, 5)
    assert torch.equal(CyclicGroup(2).act(1, x), groups.rotate(x, 2))


def test_orbit_and_permutation_representation():
    x = torch.rand(6, 6)
    orbit = C4.orbit(x)
    assert orbit.shape == (4, 6, 6)
    P = groups.rotation_permutation(6)
    for k in range(4):
        assert torch.equal(torch.linalg.matrix_power(P, k) @ x.flatten(), orbit[k].flatten())
    assert groups.power_error(P, 4) == 0.0
    assert groups.power_error(P, 2) > 0.1


def test_invariance_and_equivariance_errors():
    x = torch.rand(8, 1, 10, 10)
    assert groups.invariance_error(lambda t: t.sum((-1, -2)), x) < 1e-12
    assert groups.equivariance_error(torch.relu, x - 0.5) == 0.0
    assert groups.invariance_error(lambda t: t[..., 0, :], x) > 0.01
    assert groups.equivariance_error(lambda t: t.roll(1, dims=-1), x) > 0.01


@pytest.mark.parametrize("order", [0, -2, 2.5])
def test_bad_group_order(order):
    with pytest.raises(ValueError, match="order"):
        CyclicGroup(order)


def test_action_needs_an_order_dividing_four():
    with pytest.raises(ValueError, match="order must be 1, 2 or 4"):
        CyclicGroup(3).act(1, torch.rand(4, 4))


def test_bad_element_and_shapes():
    with pytest.raises(ValueError, match="group element"):
        C4.compose(4, 1)
    with pytest.raises(ValueError, match="square"):
        groups.rotate(torch.rand(3, 4), 1)
    with pytest.raises(ValueError, match="square"):
        groups.rotate(torch.rand(5), 1)
    with pytest.raises(TypeError, match="torch.Tensor"):
        groups.rotate([[1.0]], 1)
    with pytest.raises(ValueError, match="square"):
        groups.power_error(torch.rand(2, 3))


def test_symbols_are_pixel_symmetric_so_their_orbits_have_the_textbook_sizes():
    for size in (28, 33, 64):
        plus, bar = groups.symbol_image("+", size), groups.symbol_image("-", size)
        assert all(torch.equal(groups.rotate(plus, p), plus) for p in range(4))
        assert [torch.equal(groups.rotate(bar, p), bar) for p in range(4)] == [True, False, True, False]
    with pytest.raises(ValueError, match="symbol must be one of"):
        groups.symbol_image("x")
