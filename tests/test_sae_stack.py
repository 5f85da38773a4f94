"""The stacked SAE trainer: same weights as separate runs (to a stated tolerance), the sae-lens
save/load format, a step loop without host round-trips, and clear errors."""

from dataclasses import replace

import pytest
import torch
from sae_lens import SAE
from torch.overrides import TorchFunctionMode

from esae import orbits, sae_kernels, sae_stack, sae_training

D = 32
NAMES = ("regular", "wide", "two_layer", "invariant")

# Tolerance of stacked vs separate weights after 16–24 Adam steps, relative to each tensor
# (measured: Frobenius ≤ 3.4e-7, largest entry ≤ 1.2e-5):
# the sums run in another order (batched matmuls, sorted TopK, flattened sparse kernels, fused
# Adam), so gradients differ by float32 round-off (~1e-7 relative). Adam divides every gradient
# entry by its running RMS, so an entry that is itself at round-off level (e.g. a latent's weight
# gradient that cancels to ~0) can move by up to ~lr in either run: the largest single difference
# is of order lr / max|w|, the Frobenius difference stays near round-off.
FROBENIUS_TOL = 1e-5
MAX_TOL = 1e-3


@pytest.fixture(scope="module")
def acts():
    orbit, _ = orbits.synthetic_orbit(256, D, n_atoms=64, active=4, seed=1)
    return orbit


def configs(**kw):
    common = dict(d_in=D, d_hidden=64, n_epochs=2, batch_size=32, lr=1e-3, dead_window=64, seed=3)
    common.update(kw)
    out = [sae_training.SAETrainConfig(name=n, k=k, **common) for n in NAMES for k in (4, 8)]
    return [replace(c, n_epochs=3) if c.name == "invariant" else c for c in out]


def relative_differences(a: SAE, b: SAE) -> tuple[float, float]:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    frob = max(float((sa[n] - sb[n]).norm() / sb[n].norm().clamp_min(1e-12)) for n in sb)
    worst = max(float((sa[n] - sb[n]).abs().max() / sb[n].abs().max().clamp_min(1e-12)) for n in sb)
    return frob, worst


@pytest.fixture(scope="module")
def trained(acts):
    cfgs = configs()
    return cfgs, sae_stack.train_stacked(cfgs, acts), [sae_training.train_sae(c, acts) for c in cfgs]


def test_stacked_equals_separate(trained):
    cfgs, stacked, separate = trained
    for c, a, b in zip(cfgs, stacked, separate):
        frob, worst = relative_differences(a.sae, b.sae)
        assert frob < FROBENIUS_TOL, (c.name, c.k, frob)
        assert worst < MAX_TOL, (c.name, c.k, worst)
        assert a.history["steps"] == b.history["steps"] == len(a.history["mse"])
        torch.testing.assert_close(torch.tensor(a.history["mse"]), torch.tensor(b.history["mse"]), rtol=1e-4, atol=1e-5)
        assert a.sae.cfg.metadata.l0 == pytest.approx(b.sae.cfg.metadata.l0)
        assert a.sae.cfg.metadata.num_dead_features == b.sae.cfg.metadata.num_dead_features
        assert type(a.sae) is type(b.sae) and a.sae.cfg.d_sae == b.sae.cfg.d_sae
        assert a.history["trained_together"] == len(cfgs)
    total = stacked[0].history["seconds_together"]
    assert sum(r.history["seconds"] for r in stacked) == pytest.approx(total)


def test_auxk_was_exercised(trained):
    """The short dead window makes latents dead within the run, so the AuxK path is compared too."""
    _, stacked, _ = trained
    assert any(r.sae.cfg.metadata.num_dead_features > 0 for r in stacked)


def test_saves_and_reloads_like_separate(trained, tmp_path, acts):
    cfgs, stacked, separate = trained
    for i in (0, 4, 6):  # a regular, a two-layer and an invariant SAE
        for tag, result in (("stacked", stacked[i]), ("separate", separate[i])):
            result.sae.save_model(str(tmp_path / f"{tag}{i}"))
        a = SAE.load_from_disk(str(tmp_path / f"stacked{i}"))
        b = SAE.load_from_disk(str(tmp_path / f"separate{i}"))
        assert type(a) is type(b)
        assert a.cfg.to_dict() | {"metadata": None} == b.cfg.to_dict() | {"metadata": None}
        for name, value in stacked[i].sae.state_dict().items():
            torch.testing.assert_close(a.state_dict()[name], value, rtol=0, atol=0)
        x = acts[:8, 1]
        torch.testing.assert_close(a.encode(x), stacked[i].sae.encode(x))


class _NoHostRoundTrips(TorchFunctionMode):
    """Fails on any call that reads a tensor back to the host."""

    FORBIDDEN = {"item", "tolist", "cpu", "numpy", "__bool__", "__int__", "__float__", "__index__", "nonzero"}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in self.FORBIDDEN:
            raise AssertionError(f"host round-trip in the step loop: {name}")
        return func(*args, **(kwargs or {}))


def test_sync_free_step_has_no_host_round_trips(acts):
    cfgs = [c for c in configs(dead_window=32) if c.name in ("regular", "invariant")]
    stack = sae_stack._Stack([c for c in cfgs if c.name == "invariant"], acts.float(), torch.device("cpu"))
    x, target = acts[:32, 1], acts[:32, 0]
    for _ in range(4):  # past the dead window: the AuxK branch runs too
        with _NoHostRoundTrips():
            stack.step(x, target, sync_free=True)
    assert bool((stack.since_fired > stack.cfg.dead_feature_window).any())
    with _NoHostRoundTrips():
        stack.step(x, target, sync_free=True)


def test_sync_free_matches_default(acts):
    cfgs = [c for c in configs() if c.name in ("regular", "two_layer")]
    a = sae_stack.train_stacked(cfgs, acts, sync_free=True)
    b = sae_stack.train_stacked(cfgs, acts, sync_free=False)
    for ra, rb in zip(a, b):
        frob, _ = relative_differences(ra.sae, rb.sae)
        assert frob < FROBENIUS_TOL


def test_plan_stacks_same_shapes():
    layout = sae_stack.plan(configs())
    assert layout.stacks == [[0, 1], [2, 3], [4, 5], [6, 7]]


def test_errors(acts):
    cfgs = configs()
    with pytest.raises(ValueError, match="seed"):
        sae_stack.train_stacked([cfgs[0], replace(cfgs[1], seed=4)], acts)
    with pytest.raises(ValueError, match="batch_size"):
        sae_stack.train_stacked([cfgs[0], replace(cfgs[1], batch_size=16)], acts)
    with pytest.raises(ValueError, match=r"acts must be \(n, G, 32\)"):
        sae_stack.train_stacked(cfgs[:1], acts[:, 0])
    with pytest.raises(ValueError, match="batch_size must be at most"):
        sae_stack.train_stacked([replace(c, batch_size=512) for c in cfgs[:1]], acts)
    assert sae_stack.train_stacked([], acts) == []


def _reference_step(h, bias, w_t, w_dec, idx, k):
    """The stacked gather + decode with plain autograd and dense weights: pre-activations
    ``(S, B, J)`` of the latents ``idx`` ``(S, B, J)``, the first ``k`` decoded."""
    pre = torch.einsum("sbm,sfm->sbf", h, w_t) + bias.unsqueeze(1)
    picked = pre.gather(2, idx)
    vals = picked[..., :k].relu()
    rows = w_dec.gather(1, idx[..., :k].flatten(1).unsqueeze(-1).expand(-1, -1, w_dec.shape[-1]))
    out = (vals.flatten(1).unsqueeze(-1) * rows).view(*vals.shape, -1).sum(2)
    return picked, out


@pytest.mark.parametrize("compact", [0.0, 1.01])  # dense groups / compact gradient rows
def test_row_gradients_match_autograd(monkeypatch, compact):
    """The sparse kernels' gradients — the weights' rows added into their persistent buffers —
    equal plain autograd's dense gradients (to float32 round-off: the sums run in another order),
    also when the buffers hold the previous contribution (the decoder gets two per step)."""
    monkeypatch.setattr(sae_stack, "_COMPACT_BELOW", compact)
    gen = torch.Generator().manual_seed(0)
    n_stack, batch, n_lat, m, d, k = 2, 5, 24, 6, 4, 3
    h = torch.randn(n_stack, batch, m, generator=gen, requires_grad=True)
    bias = torch.randn(n_stack, n_lat, generator=gen, requires_grad=True)
    w_t = torch.nn.Parameter(torch.randn(n_stack, n_lat, m, generator=gen))
    w_dec = torch.nn.Parameter(torch.randn(n_stack, n_lat, d, generator=gen))
    idx = torch.stack([torch.randperm(n_lat, generator=gen)[:k + 2] for _ in range(n_stack * batch)]).view(n_stack, batch, -1)
    upstream = torch.randn(n_stack, batch, d, generator=gen)
    up_pre = torch.randn(n_stack, batch, k + 2, generator=gen)

    picked, out = _reference_step(h, bias, w_t, w_dec, idx, k)
    ((out * upstream).sum() + (picked * up_pre).sum()).backward()
    expected = {"h": h.grad.clone(), "bias": bias.grad.clone(), "w_t": w_t.grad.clone(), "w_dec": 2 * w_dec.grad}
    h.grad = bias.grad = None

    sinks = {"w_t": sae_stack._RowGrad(w_t), "w_dec": sae_stack._RowGrad(w_dec)}
    sinks["w_dec"].rows.copy_(expected["w_dec"].view(-1, d) / 2)  # a previous contribution, e.g. the AuxK decode
    flat_all = sae_stack._flat(idx, n_lat)
    flat = flat_all[:, :k].contiguous()
    groups_all = sae_stack._groups(flat_all, n_stack * n_lat, compact=True)
    groups = sae_stack._groups(flat, n_stack * n_lat, compact=True)
    assert (groups.active is None) == (compact == 0.0)
    with torch.no_grad():
        pre = torch.einsum("sbm,sfm->sbf", h, w_t) + bias.unsqueeze(1)
    raw = sae_stack._StackedGather.apply(h, bias, pre.gather(2, idx), w_t.detach().view(-1, m), flat_all, groups_all,
                                         sinks["w_t"])
    vals = raw[..., :k].relu()
    got = sae_stack._StackedDecode.apply(vals.flatten(0, 1), w_dec.detach().view(-1, d), flat, groups, sinks["w_dec"])
    torch.testing.assert_close(got.view_as(out), out.detach())
    ((got.view_as(out) * upstream).sum() + (raw * up_pre).sum()).backward()
    for name, value in (("h", h.grad), ("bias", bias.grad), ("w_t", w_t.grad), ("w_dec", w_dec.grad)):
        torch.testing.assert_close(value, expected[name], rtol=1e-6, atol=1e-6, msg=name)


def test_adam_on_row_gradients_matches_torch_adam():
    """The stacked step's optimizer path — gradient rows added into a persistent buffer, clipped,
    torch's fused Adam over the whole buffer (every row's moments decay, only the written rows get
    a gradient term), the buffer zeroed after — against ``torch.optim.Adam`` (for-loop
    implementation, as sae-lens's trainer runs it) on fresh dense gradients with
    ``clip_grad_norm_``: equal to float32 round-off (≤ 1e-6 relative) after 20 steps."""
    gen = torch.Generator().manual_seed(1)
    n_lat, width = 40, 8
    start = torch.randn(1, n_lat, width, generator=gen)
    ours, ref = torch.nn.Parameter(start.clone()), torch.nn.Parameter(start.clone())
    opt = torch.optim.Adam([ours], lr=1e-2, betas=(0.9, 0.999), fused=True)
    opt_ref = torch.optim.Adam([ref], lr=1e-2, betas=(0.9, 0.999), foreach=False)
    sink = sae_stack._RowGrad(ours)
    for step in range(20):
        idx = torch.randint(n_lat, (3, 4), generator=gen)  # 3 samples, 4 latents each: few rows
        flat = sae_stack._flat(idx.unsqueeze(0), n_lat)
        groups = sae_stack._groups(flat, n_lat, compact=True)
        assert groups.active is not None
        source = torch.randn(3, width, generator=gen) * 5
        weights = torch.randn(3, 4, generator=gen)
        sink.add(groups, sae_kernels._segment_rows(source, groups, weights))
        dense = torch.zeros(n_lat, width)
        dense.index_add_(0, idx.flatten(), weights.flatten()[:, None] * source.repeat_interleave(4, 0))
        ref.grad = dense.view_as(ref)
        torch.testing.assert_close(ours.grad, ref.grad, rtol=1e-6, atol=1e-6)
        torch.nn.utils.clip_grad_norm_([ref], 1.0)
        coef = (1.0 / (ours.grad.norm() + 1e-6)).clamp(max=1.0)
        ours.grad.mul_(coef)
        opt.step()
        opt_ref.step()
        sink.rows.zero_()
        assert ours.grad.data_ptr() == sink.rows.data_ptr()  # the optimizer kept reading the buffer
    torch.testing.assert_close(ours.detach(), ref.detach(), rtol=1e-6, atol=1e-6)
    assert not torch.equal(ours.detach(), start)


@pytest.mark.parametrize("gather_dead", [0.0, 1.01])
@pytest.mark.parametrize("compact", [0.0, 1.01])
def test_auxk_and_gradient_paths_agree(acts, monkeypatch, gather_dead, compact):
    """AuxK among the gathered dead scores or the masked full scores, compact or dense gradient
    rows: the same training, to float32 round-off (8 steps, a dead window of one step)."""
    cfgs = [c for c in configs(dead_window=32, n_epochs=1) if c.name in ("regular", "two_layer")]
    ref = sae_stack.train_stacked(cfgs, acts, sync_free=True)  # dense everything, fixed-size AuxK
    monkeypatch.setattr(sae_stack, "_GATHER_DEAD_BELOW", gather_dead)
    monkeypatch.setattr(sae_stack, "_COMPACT_BELOW", compact)
    got = sae_stack.train_stacked(cfgs, acts)
    assert any(r.sae.cfg.metadata.num_dead_features > 0 for r in got)
    for ra, rb in zip(got, ref):
        frob, _ = relative_differences(ra.sae, rb.sae)
        assert frob < FROBENIUS_TOL


@pytest.mark.parametrize("touched_below", [1.0, 0.0])
def test_row_gradient_touched_rows_scale_and_zero_bit_for_bit(touched_below, monkeypatch):
    """Clipping and zeroing only the rows written since the last zeroing give the buffer the dense
    operations give it, bit for bit (``touched_below`` 1: always over the touched rows, 0: always
    over every row), and a dense add makes them fall back to every row."""
    monkeypatch.setattr(sae_stack, "_TOUCHED_BELOW", touched_below)
    gen = torch.Generator().manual_seed(2)
    n_stack, n_lat, width = 3, 16, 5
    ours = torch.nn.Parameter(torch.zeros(n_stack, n_lat, width))
    sink = sae_stack._RowGrad(ours)
    idx = torch.randint(n_lat, (n_stack, 2, 2), generator=gen)
    flat = sae_stack._flat(idx, n_lat)
    groups = sae_stack._groups(flat, n_stack * n_lat, compact=True)
    assert groups.active is not None
    sink.add(groups, torch.randn(groups.active.numel(), width, generator=gen))
    sink.add(groups, torch.randn(groups.active.numel(), width, generator=gen))  # a second contribution
    coef = torch.tensor([0.3, 1.0, 0.7])
    expected = sink.rows.clone().view(n_stack, n_lat, width)
    for s in (0, 2):
        expected[s].mul_(coef[s])
    sink.scale(coef, [0, 2])
    assert torch.equal(ours.grad, expected)
    sink.zero()
    assert torch.equal(ours.grad, torch.zeros_like(ours.grad)) and sink.touched == []
    dense = sae_stack._groups(flat, n_stack * n_lat, compact=False)
    sink.add(dense, torch.randn(n_stack * n_lat, width, generator=gen))
    assert sink.touched is None  # any row may be non-zero now
    sink.zero()
    assert torch.equal(ours.grad, torch.zeros_like(ours.grad)) and sink.touched == []


def test_touched_rows_merge_without_a_sort():
    """Several compact adds in a step: the touched rows are their union, ascending and distinct
    (as ``torch.cat(...).unique()``), and a union of at least ``_TOUCHED_BELOW`` of the rows
    counts as every row."""
    gen = torch.Generator().manual_seed(3)
    n_stack, n_lat, width = 2, 64, 3
    sink = sae_stack._RowGrad(torch.nn.Parameter(torch.zeros(n_stack, n_lat, width)))
    lists = [torch.randint(n_stack * n_lat, (n,), generator=gen).unique() for n in (5, 7, 6)]
    sink.touched = list(lists)
    assert torch.equal(sink._touched_rows(), torch.cat(lists).unique())
    sink.touched = [torch.arange(0, n_stack * n_lat, 3), torch.arange(1, n_stack * n_lat, 3)]  # 2/3 of the rows
    assert sink._touched_rows() is None and sink.touched is None


def test_touched_rows_leave_training_bit_for_bit(acts, monkeypatch):
    """The stacked run with clipping and zeroing over the touched rows trains the same weights, bit
    for bit, as with both over every row (activations scaled up so that clipping acts; the wide
    stack's gradient rows are compact, the regular one's dense)."""
    cfgs = [c for c in configs(dead_window=32, n_epochs=1) if c.name in ("regular", "wide")]
    calls = []  # per rescaling: were the touched rows known?
    scale = sae_stack._RowGrad.scale

    def recorded(self, *args):
        calls.append(self._touched_rows() is not None)
        return scale(self, *args)

    monkeypatch.setattr(sae_stack._RowGrad, "scale", recorded)
    got = sae_stack.train_stacked(cfgs, acts * 5)
    assert any(calls) and not all(calls)
    monkeypatch.setattr(sae_stack._RowGrad, "_touched_rows", lambda self: None)
    ref = sae_stack.train_stacked(cfgs, acts * 5)
    for ra, rb in zip(got, ref):
        sa, sb = ra.sae.state_dict(), rb.sae.state_dict()
        assert all(torch.equal(sa[n], sb[n]) for n in sb)
