"""Train many TopK SAEs on one activation stream at once: chapter 5's twelve SAEs per base model
in a few large kernels per step instead of many small ones.

At the paper's batch size (64) one SAE step is overhead-bound: a handful of (64, 256) × (256, F)
products and the optimizer's per-tensor bookkeeping. Chapter 5 trains, per base model, the
regular, wide, two-layer and invariant SAEs at every K — all on the same stream of rotated
activations. :func:`train_stacked` trains them together:

- **One stream.** With the same ``seed`` and ``batch_size`` every separate run already draws the
  same sample order (:func:`esae.sae_training.orbit_batches`: one permutation and one rotation per image
  per epoch, whatever the SAE). The stacked run draws that stream once and hands each batch to
  every SAE still training (the invariant SAE may train for more epochs than the others; it sees
  the same batches, and continues the stream where they stop). Inputs, targets, initial weights
  (:func:`esae.sae_training.build_training_sae`, seeded), the decoder-bias start, the learning-rate
  schedule, gradient clipping, the AuxK loss and the dead-latent window are those of
  :func:`esae.sae_training.train_sae` — the sample order is *identical* to separate runs, not just alike.
- **Stacks.** SAEs that differ only in K (same architecture, same shapes) become one stack: their
  weights are ``(S, ...)`` tensors, the encoder runs as one batched matmul, TopK is taken once at
  the largest K (sorted, so SAE s keeps the first ``k_s`` of them via a per-SAE mask), and the
  sparse decode / encoder-gather kernels of :mod:`esae.sae_kernels` run over the flattened stack
  (latent ``f`` of SAE ``s`` is row ``s·F + f``). The loss is the sum of the SAEs' losses, so
  each SAE gets exactly its own gradient; gradient clipping (norm 1, per SAE, as sae-lens's
  trainer does) and Adam (one optimizer over the stacked tensors; Adam is elementwise, so each
  slice evolves as its own Adam state would) follow.
- **Memory traffic, not FLOPs.** At batch 64 the step is dominated by passes over the 25 M
  weights of a base model's 12 SAEs, so the sparse structure is kept through to the optimizer:
  the encoder's and decoder's gradients are non-zero only on the rows (latents) selected in the
  batch, and the backward kernels add just those rows into a persistent gradient buffer per
  weight (:class:`_RowGrad`) — no ``(S·F, ·)`` gradient is allocated, zero-filled, or summed
  (the decoder's reconstruction and AuxK gradients) per step. Clipping, torch's fused Adam (one
  pass over weights, gradients and both moments; every row's moments decay, only the selected
  rows get a gradient term — exactly Adam, whose update of a row with zero gradient is not
  zero) and the zeroing run in place; the clipping's rescaling and the zeroing touch only the
  rows written in the step when all of them were added compactly and they are fewer than a
  quarter of all (the other rows are zero: the same bits; on chapter 5's activations at batch 64,
  single-threaded, 1.2× over the first 32 steps; once most latents are dead AuxK writes most rows
  and a plain pass over every row is the cheaper one: 1.1–1.2× a step then, ``bench_saes.py
  --dead-phase``). The
  ``(S, B, F)`` scores live in a persistent buffer too, and when fewer than half of the latents
  are dead the AuxK selection looks only at the dead ones' scores. None of this changes what is
  computed, only where sums land.
- **sae-lens stays the home.** Each SAE is built as a sae-lens training SAE, its slice of the
  stack trained, copied back, given sae-lens's end-of-training metadata and converted to the
  inference SAE sae-lens saves (:func:`esae.sae_training._to_inference`): the result saves and reloads
  through ``sae_lens.SAE.load_from_disk`` like a separately trained one. The AuxK loss follows
  sae-lens's definition (the top ``d_in // 2`` dead latents model the residual, scaled by
  ``min(n_dead / (d_in // 2), 1)``), as :class:`esae.sae_kernels._SparseTopKTraining` does.

**Equality with separate runs.** The arithmetic is the same, the order of floating-point sums is
not (batched vs single matmuls, TopK sorted vs unsorted, the flattened sparse kernels, fused vs
for-loop Adam), so the
weights agree up to float32 round-off at first; a TopK near-tie resolved differently later turns
that into a visible difference on the latents concerned (after 128 steps at d = 256, 4–5 of 12
SAEs differed by 1.6e-4 – 1.6e-2 relative, the others by ≤ 2.2e-6): the same training, not the
same bits. ``tests/test_sae_stack.py`` bounds the difference after a short run and
``benchmarks/bench_saes.py`` prints it.

**No host round-trips per step** with ``sync_free`` (the default on CUDA): no ``.item()``,
``.cpu()`` or data-dependent shapes in the step loop — the AuxK set has the fixed size
``d_in // 2``, masked to the dead latents; latent groups are counted with ``index_add_`` instead
of ``bincount``; the loss curve stays on the device until the end. On the CPU the default reads
the number of dead latents to skip AuxK work when none is dead, to choose compact gradient rows
when few latents are selected, and to choose the AuxK candidates (free there: no device to wait
for); all paths compute the same thing and are tested against each other.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import sae_lens
import torch
import torch.nn.functional as F
from sae_lens.config import SAETrainerConfig
from sae_lens.saes.topk_sae import TopKTrainingSAE
from sae_lens.training.optim import get_lr_scheduler

from esae.runtime import check_cpu_policy, progress
from esae.sae_kernels import _bias_grad, _sampled_rows_dot, _segment_rows
from esae.sae_training import SAETrainConfig, TrainResult, _to_inference, build_training_sae, orbit_batches

Tensor = torch.Tensor


# ---------------------------------------------------------------------------------------------
# Kernels over a flattened stack
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Groups:
    """The (sample, slot) pairs of a flattened stack's index tensor ``flat`` ``(R, J)`` (entries:
    rows ``s·F + f`` of the stacked weights) grouped by weight row: pair ``order[i]`` (flat
    position ``r·J + j``) belongs to sample ``rows[i]``. ``active`` ``(A,)``: the distinct weight
    rows in ascending order, and ``offsets`` ``(A,)`` where each one's pairs start in ``order`` —
    or, dense (``active`` None), ``offsets`` for every weight row, empty ones included."""

    order: Tensor
    rows: Tensor
    offsets: Tensor
    active: Tensor | None


_COMPACT_BELOW = 0.5  # compact gradient rows when fewer than this fraction of the rows occur
_GATHER_DEAD_BELOW = 0.5  # AuxK picks among the dead latents' gathered scores when fewer than this fraction is dead
_TOUCHED_BELOW = 0.25  # clipping and zeroing go over the touched rows only when fewer than this fraction is touched


def _groups(flat: Tensor, n_rows: int, compact: bool) -> _Groups:
    """:func:`esae.sae_kernels._latent_groups` over ``n_rows`` weight rows; counts by ``index_add_``
    (``bincount`` reads the maximum back to size its output). With ``compact`` (the CPU path: one
    host read), only the rows that occur are kept when they are fewer than ``_COMPACT_BELOW`` of
    all (a gradient of ``A`` rows, added with ``index_add_``); otherwise the groups are dense (a
    gradient of every row, added in one pass) — the same sums either way."""
    flat_1d = flat.flatten()
    order = torch.argsort(flat_1d)
    counts = torch.zeros(n_rows, dtype=torch.long, device=flat.device)
    counts.index_add_(0, flat_1d, torch.ones_like(flat_1d))
    offsets = torch.cumsum(counts, 0) - counts
    rows = torch.div(order, flat.shape[1], rounding_mode="floor")
    if compact:
        active = counts.nonzero().squeeze(1)
        if active.numel() < _COMPACT_BELOW * n_rows:
            return _Groups(order, rows, offsets[active], active)
    return _Groups(order, rows, offsets, None)


def _flat(idx: Tensor, n_latents: int) -> Tensor:
    """Per-SAE latent indices ``(S, B, J)`` as rows of the flattened stack ``(S·B, J)``."""
    offsets = torch.arange(idx.shape[0], device=idx.device) * n_latents
    return (idx + offsets[:, None, None]).flatten(0, 1)


class _RowGrad:
    """The gradient of a stacked weight ``param`` ``(S, F, w)``, whose rows are the latents: a
    persistent buffer, set as ``param.grad`` once, into which the sparse backward kernels add
    the rows that have a gradient this step (only those rows, when few occur). Clipping, the
    optimizer (torch's fused Adam: one pass over weight, gradient and moments) and the zeroing
    after the step read it in place, so no ``(S·F, w)`` gradient is allocated per step (fresh
    pages: at these sizes the allocator maps and faults them in every time), and the decoder's
    two gradients (reconstruction and AuxK) are summed into it instead of into a third tensor."""

    def __init__(self, param: torch.nn.Parameter) -> None:
        param.grad = torch.zeros_like(param)
        self.rows = param.grad.view(-1, param.shape[-1])  # (S·F, w)
        self.n_latents = param.shape[1]
        # the rows written since the last zeroing, while every add was compact; None once one was dense
        self.touched: list[Tensor] | None = []

    def add(self, groups: _Groups, values: Tensor) -> None:
        """Add ``values`` ``(A, w)`` (dense: ``(S·F, w)``) to the rows ``groups.active``."""
        if groups.active is None:
            self.rows.add_(values)
            self.touched = None
        else:
            self.rows.index_add_(0, groups.active, values)
            if self.touched is not None:
                self.touched.append(groups.active)

    def _touched_rows(self) -> Tensor | None:
        """The rows that may be non-zero (ascending, distinct), or None when that may be any row or
        when they are at least ``_TOUCHED_BELOW`` of all rows (a pass over every row is then the
        cheaper one: once latents die, AuxK writes most rows; the same bits either way, the other
        rows being zero); merged once per step (clipping and zeroing both ask; one
        ``groups.active`` is already ascending and distinct; several are merged through a mask,
        without a sort)."""
        if self.touched is None:
            return None
        if len(self.touched) != 1:
            rows = self.rows.new_empty(0, dtype=torch.long)
            if self.touched:
                mask = torch.zeros(self.rows.shape[0], dtype=torch.bool, device=self.rows.device)
                for active in self.touched:
                    mask[active] = True
                rows = mask.nonzero().squeeze(1)
            self.touched = [rows]
        if self.touched[0].numel() >= _TOUCHED_BELOW * self.rows.shape[0]:
            self.touched = None
            return None
        return self.touched[0]

    def scale(self, coef: Tensor, stacks: Sequence[int]) -> None:
        """Multiply SAE ``s``'s rows by ``coef[s]`` for every ``s`` in ``stacks`` (gradient clipping):
        only the rows written since the last zeroing when they are known (the others are zero), the
        same products bit for bit."""
        rows = self._touched_rows()
        if rows is None:
            grad = self.rows.view(-1, self.n_latents, self.rows.shape[1])
            for s in stacks:
                grad[s].mul_(coef[s])
            return
        owner = torch.div(rows, self.n_latents, rounding_mode="floor")
        keep = torch.isin(owner, torch.as_tensor(list(stacks), dtype=torch.long, device=rows.device))
        rows, owner = rows[keep], owner[keep]
        if rows.numel():
            self.rows.index_put_((rows,), self.rows.index_select(0, rows) * coef[owner].unsqueeze(1))

    def zero(self) -> None:
        """Zero the gradient in place: only the rows written since the last zeroing when they are
        known (7–10 % of them in a batch-64 step on synthetic activations), else every row."""
        rows = self._touched_rows()
        if rows is None:
            self.rows.zero_()
        elif rows.numel():
            self.rows.index_put_((rows,), self.rows.new_zeros(()))
        self.touched = []


class _StackedGather(torch.autograd.Function):
    """The selected pre-activations ``picked`` ``(S, B, J)`` — ``(h_s W_s + b_s)[b, idx[s, b, j]]``,
    read off the scores computed without grad — made differentiable in ``h`` ``(S, B, m)`` and
    the biases ``(S, F)``; the encoder weights ``w_t`` ``(S·F, m)`` (stored transposed, rows =
    latents; ``flat`` ``(S·B, J)``: the rows picked) get their gradient rows through ``sink``.
    Backward touches only the selected latents (the stacked version of
    :class:`esae.sae_kernels._TopKGather`)."""

    @staticmethod
    def forward(ctx, h: Tensor, bias: Tensor, picked: Tensor, w_t: Tensor, flat: Tensor, groups: _Groups,
                sink: _RowGrad) -> Tensor:
        ctx.save_for_backward(h, w_t, flat)
        ctx.groups, ctx.sink, ctx.bias_shape = groups, sink, bias.shape
        return picked.clone()

    @staticmethod
    def backward(ctx, grad: Tensor):
        h, w_t, flat = ctx.saved_tensors
        g = grad.flatten(0, 1)  # (S·B, J)
        grad_h = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_h = F.embedding_bag(flat, w_t, mode="sum", per_sample_weights=g).view_as(h)
        ctx.sink.add(ctx.groups, _segment_rows(h.flatten(0, 1), ctx.groups, g))
        if ctx.needs_input_grad[1]:
            grad_b = _bias_grad(flat, g, ctx.groups, w_t.shape[0]).view(ctx.bias_shape)
        return grad_h, grad_b, None, None, None, None, None


class _StackedDecode(torch.autograd.Function):
    """``out[r] = Σ_j vals[r, j] W[flat[r, j]]`` ``(S·B, d)`` for ``vals``, ``flat`` ``(S·B, J)``
    and the stacked dictionary ``w_rows`` ``(S·F, d)``: one sparse decode over the flattened
    stack (:class:`esae.sae_kernels._SparseDecode`), the dictionary's gradient rows through ``sink``."""

    @staticmethod
    def forward(ctx, vals: Tensor, w_rows: Tensor, flat: Tensor, groups: _Groups, sink: _RowGrad) -> Tensor:
        ctx.save_for_backward(vals, w_rows, flat)
        ctx.groups, ctx.sink = groups, sink
        return F.embedding_bag(flat, w_rows, mode="sum", per_sample_weights=vals)

    @staticmethod
    def backward(ctx, grad: Tensor):
        vals, w_rows, flat = ctx.saved_tensors
        grad = grad.contiguous()
        grad_vals = _sampled_rows_dot(grad, w_rows, flat) if ctx.needs_input_grad[0] else None
        ctx.sink.add(ctx.groups, _segment_rows(grad, ctx.groups, vals))
        return grad_vals, None, None, None, None


# ---------------------------------------------------------------------------------------------
# One stack: SAEs that differ only in K
# ---------------------------------------------------------------------------------------------

def trainer_config(config: SAETrainConfig, n_images: int, device: torch.device | str) -> SAETrainerConfig:
    """The sae-lens trainer configuration :func:`esae.sae_training.train_sae` uses for ``config`` on
    ``n_images`` training images (learning-rate schedule, dead-latent and sparsity windows)."""
    steps_per_epoch = n_images // config.batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"batch_size must be at most the number of training images ({n_images}), "
                         f"got {config.batch_size}")
    n_steps = config.n_epochs * steps_per_epoch
    return SAETrainerConfig(
        total_training_samples=n_steps * config.batch_size, train_batch_size_samples=config.batch_size,
        lr=config.lr, lr_end=config.lr, lr_decay_steps=int(config.lr_decay_fraction * n_steps),
        device=str(device), dead_feature_window=max(1, math.ceil(config.dead_window / config.batch_size)),
        feature_sampling_window=max(1, steps_per_epoch))


_PARAMS = ("b_dec", "W_dec", "W_enc", "b_enc", "W_enc1", "b_enc1")


class _Stack:
    """S sae-lens training SAEs of one architecture and training schedule that differ only in K,
    trained as ``(S, ...)`` tensors: ``W_enc`` stored transposed ``(S, F, m)``, ``W_dec``
    ``(S, F, d)``, biases ``(S, F)`` / ``(S, d)``, the two-layer encoder's first layer
    ``(S, d, d_hidden)``. Dead-latent counters and the loss curve are ``(S, ...)`` tensors too."""

    def __init__(self, configs: list[SAETrainConfig], acts: Tensor, device: torch.device) -> None:
        self.configs = configs
        first = configs[0]
        self.saes: list[TopKTrainingSAE] = [build_training_sae(c, device) for c in configs]
        target_mean = acts[:, 0].mean(0) if first.invariant else acts.mean((0, 1))
        with torch.no_grad():
            for sae in self.saes:
                sae.b_dec.copy_(target_mean)
        self.invariant = first.invariant
        self.rescale = bool(self.saes[0].cfg.rescale_acts_by_decoder_norm)
        self.aux_coefficient = float(self.saes[0].cfg.aux_loss_coefficient)
        names = [n for n in _PARAMS if hasattr(self.saes[0], n)]
        self.params: dict[str, torch.nn.Parameter] = {}
        for name in names:
            slices = [getattr(sae, name).detach() for sae in self.saes]
            if name == "W_enc":
                slices = [w.t() for w in slices]
            self.params[name] = torch.nn.Parameter(torch.stack(slices).contiguous())
        self.n_stack = len(configs)
        self.d_in, self.n_latents = first.d_in, first.d_sae
        ks = torch.tensor([c.k for c in configs], device=device)
        self.k_max = int(ks.max())
        self.k_mask = (torch.arange(self.k_max, device=device)[None] < ks[:, None]).float()  # (S, K_max)
        self.k_aux_max = self.d_in // 2
        self.cfg = trainer_config(first, acts.shape[0], device)
        self.n_steps = self.cfg.total_training_steps
        # sae-lens's Adam and betas; fused: one pass over each tensor instead of about six (the
        # step at batch 64 is memory-bound, and on CUDA it keeps the step counter on the device)
        self.optimizer = torch.optim.Adam(self.params.values(), lr=self.cfg.lr,
                                          betas=(self.cfg.adam_beta1, self.cfg.adam_beta2), fused=True)
        self.row_grads = {name: _RowGrad(self.params[name]) for name in ("W_enc", "W_dec")}
        self._scores_buffer: Tensor | None = None
        self.scheduler = get_lr_scheduler(
            self.cfg.lr_scheduler_name, optimizer=self.optimizer, training_steps=self.cfg.total_training_steps,
            lr=self.cfg.lr, warm_up_steps=self.cfg.lr_warm_up_steps, decay_steps=self.cfg.lr_decay_steps,
            lr_end=self.cfg.lr_end, num_cycles=self.cfg.n_restart_cycles)
        shape = (self.n_stack, self.n_latents)
        self.since_fired = torch.zeros(shape, device=device)
        self.freq = torch.zeros(shape, device=device)
        self.freq_samples = 0
        self.mse = torch.empty(self.n_stack, self.n_steps, device=device)
        self.step_count = 0

    # -- one step ------------------------------------------------------------------------------

    def _hidden(self, x: Tensor) -> Tensor:
        """The input of the TopK layer ``(S, B, m)`` for inputs ``x`` ``(B, d)``."""
        p = self.params
        h = x.unsqueeze(0) - p["b_dec"].unsqueeze(1)  # sae-lens's apply_b_dec_to_input
        if "W_enc1" in p:
            h = torch.relu(torch.baddbmm(p["b_enc1"].unsqueeze(1), h, p["W_enc1"]))
        return h

    def _scores(self, batch: int, device: torch.device) -> Tensor:
        """The persistent ``(S, B, F)`` buffer of the selection scores (no per-step allocation:
        at batch 512 the wide stack's is 50 MB, fresh pages every step)."""
        shape = (self.n_stack, batch, self.n_latents)
        if self._scores_buffer is None or self._scores_buffer.shape != shape:
            self._scores_buffer = torch.empty(shape, device=device)
        return self._scores_buffer

    def loss(self, x: Tensor, target: Tensor, sync_free: bool) -> tuple[Tensor, Tensor, Tensor]:
        """Sum over the stack of each SAE's loss (MSE + AuxK), the per-SAE MSE ``(S,)`` and the
        latents that fired in this batch, counted per SAE ``(S, F)``; the backward pass leaves the
        encoder and decoder weights' gradients in their :class:`_RowGrad` buffers."""
        p = self.params
        n_stack, n_latents = self.n_stack, self.n_latents
        h = self._hidden(x)
        dead = self.since_fired > self.cfg.dead_feature_window  # (S, F)
        with torch.no_grad():
            norms = p["W_dec"].norm(dim=-1) if self.rescale else None  # (S, F)
            scores = self._scores(x.shape[0], x.device)
            if norms is not None and h.shape[1] >= h.shape[2]:  # fold the norms into the smaller operand
                torch.baddbmm((p["b_enc"] * norms).unsqueeze(1), h, (p["W_enc"] * norms[..., None]).transpose(1, 2),
                              out=scores)
            else:
                torch.baddbmm(p["b_enc"].unsqueeze(1), h, p["W_enc"].transpose(1, 2), out=scores)  # (S, B, F)
                if norms is not None:
                    scores.mul_(norms.unsqueeze(1))
            idx = scores.topk(self.k_max, dim=-1, sorted=True).indices  # (S, B, K_max): SAE s keeps the first k_s
            picked = scores.gather(2, idx)
            n_dead = dead.sum(-1)  # (S,)
            k_aux = self.k_aux_max if sync_free else min(self.k_aux_max, int(n_dead.max()))
            if k_aux > 0:  # AuxK: the top dead latents model the residual (fixed size, masked per SAE)
                aux_mask = (torch.arange(k_aux, device=x.device)[None] < n_dead[:, None]).to(x.dtype)  # (S, k_aux)
                n_candidates = n_latents if sync_free else int(n_dead.max())
                if n_candidates <= _GATHER_DEAD_BELOW * n_latents:  # few dead: the top k_aux among their scores only
                    dead_idx = torch.argsort((~dead).to(torch.uint8), dim=1, stable=True)[:, :n_candidates]  # (S, n)
                    candidates = scores.gather(2, dead_idx.unsqueeze(1).expand(-1, x.shape[0], -1))
                    candidates.masked_fill_(~dead.gather(1, dead_idx).unsqueeze(1), -math.inf)
                    top = candidates.topk(k_aux, dim=-1, sorted=True)
                    aux_idx = dead_idx.unsqueeze(1).expand(-1, x.shape[0], -1).gather(2, top.indices)
                    aux_picked = top.values
                else:
                    scores.masked_fill_(~dead.unsqueeze(1), -math.inf)  # in place: the live scores were read above
                    aux_idx = scores.topk(k_aux, dim=-1, sorted=True).indices  # (S, B, k_aux)
                    aux_picked = scores.gather(2, aux_idx)
                # slots past an SAE's own number of dead latents read a masked score (-inf): 0 instead,
                # as their value is masked out below (they then add 0 to every gradient)
                aux_picked.masked_fill_(aux_mask.unsqueeze(1) == 0, 0.0)
                idx_all = torch.cat([idx, aux_idx], -1)
                picked = torch.cat([picked, aux_picked], -1)
            else:
                idx_all = idx
            flat_all = _flat(idx_all, n_latents)  # (S·B, J): rows of the flattened stack
            if norms is not None:
                picked = picked / norms.flatten()[flat_all].view_as(picked)
            groups_all = _groups(flat_all, n_stack * n_latents, compact=not sync_free)
            flat = flat_all[:, :self.k_max].contiguous() if k_aux > 0 else flat_all
            groups = _groups(flat, n_stack * n_latents, compact=not sync_free) if k_aux > 0 else groups_all
        w_dec = p["W_dec"].detach().view(-1, self.d_in)  # (S·F, d); its gradient goes to its _RowGrad
        raw = _StackedGather.apply(h, p["b_enc"], picked, p["W_enc"].detach().view(n_stack * n_latents, -1), flat_all,
                                   groups_all, self.row_grads["W_enc"])
        vals = raw[..., :self.k_max].relu() * self.k_mask.unsqueeze(1)
        out = _StackedDecode.apply(vals.flatten(0, 1), w_dec, flat, groups, self.row_grads["W_dec"])
        out = out.view(n_stack, -1, self.d_in) + p["b_dec"].unsqueeze(1)
        mse = (out - target).pow(2).sum(-1).mean(-1)  # (S,)
        total = mse.sum()
        if k_aux > 0:
            residual = (target - out).detach()
            aux_flat = flat_all[:, self.k_max:].contiguous()
            aux_vals = (raw[..., self.k_max:] * aux_mask.unsqueeze(1)).flatten(0, 1)
            aux_out = _StackedDecode.apply(aux_vals, w_dec, aux_flat, _groups(aux_flat, n_stack * n_latents,
                                           compact=not sync_free), self.row_grads["W_dec"])
            scale = (n_dead.to(x.dtype) / self.k_aux_max).clamp(max=1.0)
            aux = self.aux_coefficient * scale * (aux_out.view_as(out) - residual).pow(2).sum(-1).mean(-1)
            total = total + aux.sum()
        with torch.no_grad():
            fired = torch.zeros(n_stack * n_latents, device=x.device)
            fired.index_add_(0, flat.flatten(), (vals > 0).flatten().to(fired.dtype))
        return total, mse.detach(), fired.view(n_stack, n_latents)

    def step(self, x: Tensor, target: Tensor, sync_free: bool) -> None:
        """One training step of every SAE of the stack on inputs ``x`` and targets ``target``
        ``(B, d)``, as sae-lens's ``SAETrainer`` does it for one SAE: loss, backward, gradient
        clipping at norm 1 per SAE, Adam, zeroed gradients, learning-rate schedule."""
        if self.step_count > 0 and self.step_count % self.cfg.feature_sampling_window == 0:
            self.freq.zero_()  # sae-lens's maybe_reset_sparsity
            self.freq_samples = 0
        total, mse, fired = self.loss(x, target, sync_free)
        with torch.no_grad():
            self.since_fired += 1
            self.since_fired.masked_fill_(fired > 0, 0)
            self.freq += fired
            self.freq_samples += x.shape[0]
            self.mse[:, self.step_count] = mse
        total.backward()
        self._clip(sync_free)
        self.optimizer.step()
        self._zero_grad()
        self.scheduler.step()
        self.step_count += 1

    @torch.no_grad()
    def _clip(self, sync_free: bool, max_norm: float = 1.0) -> None:
        """``torch.nn.utils.clip_grad_norm_(sae.parameters(), 1.0)`` for every SAE of the stack.
        Off ``sync_free``, the gradients of an SAE whose coefficient is 1 are left alone (a
        multiplication by 1.0 changes no bit; the check is a host read, free on the CPU)."""
        grads = [q.grad for q in self.params.values()]
        norms = torch.stack([torch.linalg.vector_norm(g.reshape(self.n_stack, -1), dim=1) for g in grads])
        coef = (max_norm / (torch.linalg.vector_norm(norms, dim=0) + 1e-6)).clamp(max=1.0)  # (S,)
        if sync_free:
            for g in grads:
                g.mul_(coef.view(-1, *[1] * (g.ndim - 1)))
            return
        clipped = (coef < 1.0).nonzero().flatten().tolist()
        if not clipped:
            return
        for name, q in self.params.items():
            if name in self.row_grads:
                self.row_grads[name].scale(coef, clipped)
            else:
                for s in clipped:
                    q.grad[s].mul_(coef[s])

    @torch.no_grad()
    def _zero_grad(self) -> None:
        """``optimizer.zero_grad()``: the small tensors' gradients dropped, the row gradients'
        buffers zeroed in place (kept for the next step)."""
        for name, q in self.params.items():
            if name in self.row_grads:
                self.row_grads[name].zero()
            else:
                q.grad = None

    # -- results -------------------------------------------------------------------------------

    @torch.no_grad()
    def results(self, seconds: float, total_steps: int, n_together: int) -> list[TrainResult]:
        """Copy each slice back into its sae-lens training SAE, record sae-lens's end-of-training
        metadata, and return the inference SAEs with their histories (``seconds``: this SAE's
        share of the run's wall time ``seconds``, in proportion to its steps among the
        ``total_steps`` of all ``n_together`` SAEs)."""
        curves = self.mse.cpu()
        out = []
        for s, (config, sae) in enumerate(zip(self.configs, self.saes)):
            for name, stacked in self.params.items():
                value = stacked[s].t() if name == "W_enc" else stacked[s]
                getattr(sae, name).copy_(value)
            sae.cfg.sae_lens_training_version = str(sae_lens.__version__)
            if self.freq_samples > 0:
                sae.cfg.metadata.l0 = float(self.freq[s].sum()) / self.freq_samples
                sae.cfg.metadata.num_dead_features = int((self.since_fired[s] > self.cfg.dead_feature_window).sum())
            sae.cfg.metadata.esae_training = {"name": config.name,
                                              "objective": "invariant" if config.invariant else "reconstruction"}
            samples = self.n_steps * config.batch_size
            share = seconds * self.n_steps / total_steps
            history = {"steps": self.n_steps, "samples": samples, "seconds": share,
                       "samples_per_s": samples / max(share, 1e-9), "mse": curves[s].tolist(),
                       "trained_together": n_together, "seconds_together": seconds}
            out.append(TrainResult(_to_inference(sae), history))
        return out


# ---------------------------------------------------------------------------------------------
# Training every SAE of a base model at once
# ---------------------------------------------------------------------------------------------

def stack_key(config: SAETrainConfig) -> SAETrainConfig:
    """What SAEs must share to be stacked: everything but K."""
    return replace(config, k=1)


@dataclass
class StackPlan:
    """How :func:`train_stacked` groups ``configs``: ``stacks[i]`` lists the positions in
    ``configs`` of the SAEs trained as stack i (same architecture and schedule, K differs)."""

    stacks: list[list[int]]


def plan(configs: Sequence[SAETrainConfig]) -> StackPlan:
    """Group ``configs`` into stacks (same everything but K), in order of first appearance."""
    groups: dict[SAETrainConfig, list[int]] = {}
    for i, c in enumerate(configs):
        groups.setdefault(stack_key(c), []).append(i)
    return StackPlan(list(groups.values()))


def train_stacked(configs: Sequence[SAETrainConfig], acts: Tensor, device: torch.device | str = "cpu",
                  desc: str | None = None, sync_free: bool | None = None) -> list[TrainResult]:
    """Train every SAE of ``configs`` together on orbit activations ``acts`` ``(n, G, d_in)``
    (``acts[i, p] = ψ(g^p x_i)``, entry ``[i, 0]`` the invariant SAE's target): the results, in
    the order of ``configs``, equal :func:`esae.sae_training.train_sae`'s for each config up to float
    round-off (see the module docstring for what is identical and what is not).

    All configs must share ``seed``, ``batch_size`` and ``canonical`` (they share one sample
    stream); SAEs that differ only in K are stacked. ``sync_free`` (default: on CUDA) keeps the
    step loop free of host round-trips. Each history carries its own loss curve, the run's wall
    time ``seconds_together`` (shared by the ``trained_together`` SAEs) and, as ``seconds`` and
    ``samples_per_s``, this SAE's share of it (in proportion to its steps), so that the SAEs'
    ``seconds`` add up to the run's."""
    configs = list(configs)
    if not configs:
        return []
    device = torch.device(device)
    for field_name in ("seed", "batch_size", "canonical", "d_in"):
        values = sorted({getattr(c, field_name) for c in configs}, key=str)
        if len(values) > 1:
            raise ValueError(f"configs trained together must share {field_name} (one sample stream), got {values}")
    d_in = configs[0].d_in
    if acts.ndim != 3 or acts.shape[2] != d_in:
        raise ValueError(f"acts must be (n, G, {d_in}) orbit activations, got {tuple(acts.shape)}")
    sync_free = device.type == "cuda" if sync_free is None else sync_free
    check_cpu_policy()
    acts = acts.to(device=device, dtype=torch.float32)
    layout = plan(configs)
    stacks = [_Stack([configs[i] for i in members], acts, device) for members in layout.stacks]
    n_steps = max(st.n_steps for st in stacks)
    batches = orbit_batches(acts, configs[0].batch_size, pairs=True,
                            generator=torch.Generator().manual_seed(configs[0].seed))
    start = time.perf_counter()
    for step in progress(range(n_steps), desc=desc or f"{len(configs)} SAEs", leave=False):
        pair = next(batches)
        x, canonical = pair[:, 0], pair[:, 1]
        for st in stacks:
            if step < st.n_steps:
                st.step(x, canonical if st.invariant else x, sync_free)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    results: list[Any] = [None] * len(configs)
    total_steps = sum(st.n_steps * st.n_stack for st in stacks)
    for members, st in zip(layout.stacks, stacks):
        for i, result in zip(members, st.results(seconds, total_steps, len(configs))):
            results[i] = result
    return results
