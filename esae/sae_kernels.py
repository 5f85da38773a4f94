"""The sparse TopK training pass behind :mod:`esae.saes`'s training classes (chapter 5).

sae-lens's TopK SAE computes its training loss densely: every latent's pre-activation, a
``(B, F)`` mask, a dense decode. Only K latents per sample are non-zero, so this module computes
the same loss and the same gradients (tested against sae-lens's dense TopK) touching only those:
the decoder runs as a sum over the K active rows (:class:`_SparseDecode`), and the encoder's
backward touches only the K selected columns (:class:`_TopKGather`). Per sample that is one dense
matmul (the encoder's forward, needed to pick the top K) instead of about four, and no ``(B, F)``
temporaries beyond the pre-activations. :class:`_SparseTopKTraining` is the ``training_forward_pass``
built on them, mixed into the training classes of :mod:`esae.saes`; it also accepts (input,
target) pairs ``(B, 2, d)``, the one extension the invariance loss needs. :mod:`esae.sae_stack`
runs the same kernels over a stack of SAEs.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from sae_lens.saes.sae import TrainStepInput, TrainStepOutput
from sae_lens.saes.topk_sae import TopKTrainingSAEConfig

Tensor = torch.Tensor


# ---------------------------------------------------------------------------------------------
# Sparse kernels: the TopK SAE's forward and backward touching only the K active latents
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _LatentGroups:
    """The (sample, slot) pairs of an index tensor ``idx`` ``(B, J)`` grouped by latent: pair
    ``order[i]`` (flat index ``b * J + j``) belongs to sample ``rows[i]``; latent f's pairs are
    ``order[offsets[f] : offsets[f] + counts[f]]``."""

    order: Tensor
    rows: Tensor
    offsets: Tensor


def _latent_groups(idx: Tensor, n_latents: int) -> _LatentGroups:
    flat = idx.flatten()
    order = torch.argsort(flat)
    counts = torch.bincount(flat, minlength=n_latents)
    return _LatentGroups(order, torch.div(order, idx.shape[1], rounding_mode="floor"), torch.cumsum(counts, 0) - counts)


def _segment_rows(source: Tensor, groups: _LatentGroups, weights: Tensor) -> Tensor:
    """``out[f] = Σ_{(b, j): idx[b, j] = f} weights[b, j] · source[b]``: ``(n_latents, m)`` from
    ``source`` ``(B, m)`` — a sparse ``Sᵀ @ source`` done as one ``embedding_bag`` over the pairs
    sorted by latent, without forming the ``(B, n_latents)`` matrix S."""
    return F.embedding_bag(groups.rows, source, groups.offsets, mode="sum",
                           per_sample_weights=weights.flatten()[groups.order].to(source.dtype))


def _bias_grad(idx: Tensor, values: Tensor, groups, n_latents: int) -> Tensor:
    """``out[f] = Σ_{(b, j): idx[b, j] = f} values[b, j]`` ``(n_latents,)``: the gradient of the
    encoder bias entries the TopK picked. On the CPU by ``index_add_`` in pair order; elsewhere
    as a segment sum over ``groups`` (:func:`_bias_grad_segments`), because a GPU's
    ``index_add_`` adds floats atomically, in another order on every run, and TopK near-ties
    would turn that into different trained SAEs from the same seed."""
    if values.device.type == "cpu":
        out = torch.zeros(n_latents, dtype=values.dtype, device=values.device)
        return out.index_add_(0, idx.flatten(), values.flatten())
    return _bias_grad_segments(values, groups, n_latents)


def _bias_grad_segments(values: Tensor, groups, n_latents: int) -> Tensor:
    """:func:`_bias_grad` in a fixed order on any device: each latent's pairs summed in ``groups``'
    sorted order by one ``embedding_bag`` over a column of ones (:func:`_segment_rows`); with
    compact groups (``groups.active``: only the latents that occur) scattered into all."""
    sums = _segment_rows(values.new_ones(values.shape[0], 1), groups, values)[:, 0]
    active = getattr(groups, "active", None)
    return sums if active is None else values.new_zeros(n_latents).index_copy_(0, active, sums)


class _TopKGather(torch.autograd.Function):
    """``(h @ W + b)[b, idx[b, j]]`` ``(B, J)``, read off ``scores = (h @ W + b) · norms`` ``(B, F)``
    already computed without grad (``norms`` ``(F,)``, or None for 1). The backward pass is
    sparse: the gradient reaches only the J selected columns of ``W`` ``(m, F)`` and entries of
    ``b`` ``(F,)``, and ``h`` ``(B, m)`` gets ``Σ_j g[b, j] W[:, idx[b, j]]`` via ``embedding_bag``."""

    @staticmethod
    def forward(ctx, h: Tensor, weight: Tensor, bias: Tensor, scores: Tensor, norms: Tensor | None, idx: Tensor,
                groups: _LatentGroups) -> Tensor:
        ctx.save_for_backward(h, weight, idx)
        ctx.groups = groups
        picked = scores.gather(1, idx)
        return picked / norms[idx] if norms is not None else picked

    @staticmethod
    def backward(ctx, grad: Tensor):
        h, weight, idx = ctx.saved_tensors
        grad_h = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_h = F.embedding_bag(idx, weight.t().contiguous(), mode="sum", per_sample_weights=grad)
        if ctx.needs_input_grad[1]:
            grad_w = _segment_rows(h, ctx.groups, grad).t().contiguous()
        if ctx.needs_input_grad[2]:
            grad_b = _bias_grad(idx, grad, ctx.groups, weight.shape[1])
        return grad_h, grad_w, grad_b, None, None, None, None


_SDDMM_DEVICES = ("cpu",)  # where torch.sparse.sampled_addmm computes the value gradient (else: dense + gather)


def _sampled_rows_dot(grad: Tensor, w_dec: Tensor, idx: Tensor) -> Tensor:
    """``out[b, j] = ⟨grad[b], w_dec[idx[b, j]]⟩`` ``(B, J)``: the product ``grad @ w_decᵀ`` sampled
    at the J active latents of each row. On the CPU one ``sampled_addmm`` (SDDMM) over the CSR
    pattern of ``idx`` does it in O(B·J·d); elsewhere the dense product is gathered (a GPU does the
    ``(B, F)`` matmul faster than it would launch a sparse kernel)."""
    if grad.device.type in _SDDMM_DEVICES:
        rows, width = idx.shape
        crow = torch.arange(0, rows * width + 1, width, device=idx.device)
        pattern = torch.sparse_csr_tensor(crow, idx.flatten(), torch.zeros(rows * width, dtype=grad.dtype,
                                          device=grad.device), (rows, w_dec.shape[0]), check_invariants=False)
        return torch.sparse.sampled_addmm(pattern, grad, w_dec.t(), beta=0.0).values().view(rows, width)
    return (grad @ w_dec.t()).gather(1, idx)


class _SparseDecode(torch.autograd.Function):
    """``Σ_j vals[b, j] W_dec[idx[b, j]]`` ``(B, d)`` for ``vals``, ``idx`` ``(B, J)`` and
    ``W_dec`` ``(F, d)``; forward and backward cost O(B·J·d) instead of O(B·F·d)."""

    @staticmethod
    def forward(ctx, vals: Tensor, idx: Tensor, w_dec: Tensor, groups: _LatentGroups) -> Tensor:
        ctx.save_for_backward(vals, idx, w_dec)
        ctx.groups = groups
        return F.embedding_bag(idx, w_dec, mode="sum", per_sample_weights=vals)

    @staticmethod
    def backward(ctx, grad: Tensor):
        vals, idx, w_dec = ctx.saved_tensors
        grad_vals = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_vals = _sampled_rows_dot(grad.contiguous(), w_dec, idx)
        if ctx.needs_input_grad[2]:
            grad_w = _segment_rows(grad, ctx.groups, vals)
        return grad_vals, None, grad_w, None


def sparse_decode(vals: Tensor, idx: Tensor, w_dec: Tensor) -> Tensor:
    """Decode TopK latents given as values and indices ``(B, K)`` with dictionary ``w_dec``
    ``(F, d)``: ``(B, d)``, differentiable in ``vals`` and ``w_dec`` at O(B·K·d) cost."""
    return _SparseDecode.apply(vals, idx, w_dec, _latent_groups(idx, w_dec.shape[0]))


class _SparseTopKTraining:
    """Mixin for sae-lens ``TopKTrainingSAE`` subclasses: a sparse ``training_forward_pass``
    with the same loss and gradients as sae-lens's dense one, accepting (input, target) pairs.

    ``step_input.sae_in`` is either ``(B, d_in)`` (target = input, the usual SAE loss) or
    ``(B, 2, d_in)`` holding ``[input, target]`` pairs (the invariance loss)."""

    cfg: TopKTrainingSAEConfig

    def _encoder_hidden(self, x: Tensor) -> Tensor:
        """The input to the last (TopK) encoder layer, ``(B, m)``."""
        return self.process_sae_in(x)

    def training_forward_pass(self, step_input: TrainStepInput) -> TrainStepOutput:
        sae_in = step_input.sae_in
        if sae_in.ndim == 3 and sae_in.shape[1] == 2:
            x, target = sae_in[:, 0], sae_in[:, 1].to(self.dtype)
        elif sae_in.ndim == 2:
            x = target = sae_in.to(self.dtype)
        else:
            raise ValueError(f"sae_in must be (B, d_in) or (B, 2, d_in) pairs, got {tuple(sae_in.shape)}")
        n_latents, k = self.cfg.d_sae, self.cfg.k
        h = self._encoder_hidden(x)
        with torch.no_grad():
            # selection scores (B, F), the one dense matmul: pre-activations times decoder norms,
            # folded into the weights (an (m, F) product instead of a second (B, F) pass)
            norms = self.W_dec.norm(dim=-1) if self.cfg.rescale_acts_by_decoder_norm else None
            if norms is not None:
                scores = torch.addmm(self.b_enc * norms, h, self.W_enc * norms)
            else:
                scores = torch.addmm(self.b_enc, h, self.W_enc)
            idx = scores.topk(k, dim=-1, sorted=False).indices  # (B, K)
            dead = step_input.dead_neuron_mask
            n_dead = int(dead.sum()) if dead is not None else 0
            k_aux = min(self.cfg.d_in // 2, n_dead)
            if k_aux > 0:  # AuxK (Gao et al.): the top dead latents model the residual
                dead_idx = dead.nonzero().squeeze(1)
                aux_idx = dead_idx[scores[:, dead_idx].topk(k_aux, dim=-1, sorted=False).indices]
                idx_all = torch.cat([idx, aux_idx], 1)
            else:
                idx_all = idx
            groups_all = _latent_groups(idx_all, n_latents)
            groups = groups_all if k_aux == 0 else _latent_groups(idx, n_latents)
        raw = _TopKGather.apply(h, self.W_enc, self.b_enc, scores, norms, idx_all, groups_all)
        vals = raw[:, :k].relu()
        sae_out = _SparseDecode.apply(vals, idx, self.W_dec, groups) + self.b_dec
        mse_loss = (sae_out - target).pow(2).sum(-1).mean()
        losses = {"mse_loss": mse_loss}
        total = mse_loss
        if k_aux > 0:
            aux_vals = raw[:, k:]
            residual = (target - sae_out).detach()
            aux_out = _SparseDecode.apply(aux_vals, aux_idx, self.W_dec, _latent_groups(aux_idx, n_latents))
            scale = min(n_dead / (self.cfg.d_in // 2), 1.0)
            aux = self.cfg.aux_loss_coefficient * scale * (aux_out - residual).pow(2).sum(-1).mean()
            losses["auxiliary_reconstruction_loss"] = aux
            total = total + aux
        with torch.no_grad():  # latents in units of unit-norm dictionary rows, for the trainer's statistics
            shown = vals * norms[idx] if norms is not None else vals
            rows = torch.arange(x.shape[0], device=x.device).repeat_interleave(k)
            feature_acts = torch.sparse_coo_tensor(torch.stack([rows, idx.flatten()]), shown.flatten(),
                                                   (x.shape[0], n_latents), check_invariants=False)
        return TrainStepOutput(sae_in=target, sae_out=sae_out, feature_acts=feature_acts, hidden_pre=scores,
                               loss=total, losses=losses)


def _quiet_sae_lens() -> None:
    warnings.filterwarnings("ignore", message="Sparse invariant checks are implicitly disabled")
    warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")


_quiet_sae_lens()
