"""Using a trained SAE of :mod:`esae.saes`: reconstructions, the frontier metrics, its features (chapter 5).

Metrics for the frontier (:func:`evaluate`): L0, L1 of the latents (decoder rows have unit norm
after training, so L1 is comparable across SAEs), the fraction of dead latents, explained variance
and the spliced MSE through any ``decode`` callable; :func:`orbit_spread` and :func:`invariant_fit`
for what an encoder does across an orbit. Feature classification: :func:`feature_scores`
(cosine of d and M d, inside the activations' span :func:`data_basis`) and
:func:`invariant_fraction`; :func:`feature_images` draws features through a decoder.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from sae_lens import SAE

from esae.checks import check_float, check_int
from esae.saes import EquivariantTopKSAE

Tensor = torch.Tensor


def reconstruct(sae: SAE, acts: Tensor, p: int | Tensor | None = None) -> Tensor:
    """The SAE's reconstruction of ``acts`` ``(n, d_in)``: ``M^p D(E(x))`` for an equivariant
    SAE (``p`` required: the rotation of each input relative to its canonical image), ``D(E(x))``
    for every other SAE (an invariant SAE thus reconstructs the canonical activation)."""
    if isinstance(sae, EquivariantTopKSAE):
        if p is None:
            raise ValueError("p (the rotation of each input) is required to reconstruct with an equivariant SAE")
        return sae.reconstruct(acts, p)
    return sae.decode(sae.encode(acts))


@torch.no_grad()
def evaluate(sae: SAE, acts: Tensor, p: Tensor | int | None = None, *,
             decode: Callable[[Tensor], Tensor] | None = None, images: Tensor | None = None,
             batch_size: int = 4096) -> dict[str, float | None]:
    """Frontier metrics of ``sae`` on activations ``acts`` ``(n, d_in)`` of images ``g^p x``.

    Returns ``l0`` (mean number of non-zero latents), ``l1`` (mean L1 norm of the latents; the
    decoder rows have unit norm), ``dead`` (fraction of latents that never fire on ``acts``),
    ``explained_variance`` (1 − Σ‖x − x̂‖² / Σ‖x − x̄‖², pooled) and ``spliced_mse``: the mean
    squared pixel error of ``decode(x̂)`` against ``images`` ``(n, 1, H, W)`` — the base model's
    reconstruction error with its activations replaced by the SAE's (None without ``decode``)."""
    device = sae.W_dec.device
    n = acts.shape[0]
    p_all = torch.as_tensor(p).expand(n) if p is not None else None
    l0 = l1 = resid = spliced = 0.0
    fired = torch.zeros(sae.cfg.d_sae, dtype=torch.bool, device=device)
    mean = acts.double().mean(0).to(device)
    total = 0.0
    for start in range(0, n, batch_size):
        x = acts[start:start + batch_size].to(device)
        z = sae.encode(x)
        xhat = sae.decode(z)
        if isinstance(sae, EquivariantTopKSAE):
            if p_all is None:
                raise ValueError("p is required to evaluate an equivariant SAE")
            xhat = sae.transform(xhat, p_all[start:start + batch_size])
        nz = z != 0
        l0 += float(nz.sum())
        l1 += float(z.abs().sum())
        fired |= nz.any(0)
        resid += float((x - xhat).double().pow(2).sum())
        total += float((x.double() - mean).pow(2).sum())
        if decode is not None:
            if images is None:
                raise ValueError("images are required with decode (the spliced MSE compares against them)")
            target = images[start:start + batch_size].to(device)
            spliced += float((decode(xhat) - target).double().pow(2).sum()) / target[0].numel()
    return {"l0": l0 / n, "l1": l1 / n, "dead": float((~fired).float().mean()),
            "explained_variance": 1.0 - resid / total if total > 0 else None,
            "spliced_mse": spliced / n if decode is not None else None}


@torch.no_grad()
def spliced_mse(decode: Callable[[Tensor], Tensor], acts: Tensor, images: Tensor, batch_size: int = 4096) -> float:
    """Mean squared pixel error of ``decode(acts)`` ``(n, d)`` against ``images`` ``(n, 1, H, W)``:
    with the base model's own activations, its reconstruction error (the floor of the frontier)."""
    err = sum(float((decode(acts[i:i + batch_size]) - images[i:i + batch_size].to(acts.device)).double().pow(2).sum())
              for i in range(0, acts.shape[0], batch_size))
    return err / images.numel()


@torch.no_grad()
def orbit_spread(sae: SAE, acts: Tensor, batch_size: int = 4096) -> float:
    """How much the latents change across an orbit, for orbit activations ``acts`` ``(n, G, d)``:
    ``Σ_i Σ_p ‖z_ip − z̄_i‖² / Σ_i Σ_p ‖z_ip‖²`` with ``z_ip = E(ψ(g^p x_i))`` and ``z̄_i`` the
    orbit mean — 0 for an encoder that is exactly invariant, larger the more the code depends
    on the orientation (the relative invariance error of :func:`esae.groups.invariance_error`
    measured around the orbit mean)."""
    n, order, d = acts.shape
    num = den = 0.0
    for start in range(0, n, max(1, batch_size // order)):
        chunk = acts[start:start + max(1, batch_size // order)].to(sae.W_dec.device)
        z = sae.encode(chunk.reshape(-1, d)).view(chunk.shape[0], order, -1)
        num += float((z - z.mean(1, keepdim=True)).pow(2).sum())
        den += float(z.pow(2).sum())
    return num / den if den > 0 else 0.0


@torch.no_grad()
def invariant_fit(sae: SAE, acts: Tensor) -> dict[str, float]:
    """What an SAE returns for every member of an orbit, for orbit activations ``acts``
    ``(n, G, d)`` whose entry ``[i, 0]`` is the intended target: ``r2_target``, the pooled R² of
    ``D(E(ψ(g^p x)))`` against ``ψ(x)`` (how well it finds the canonical activation), and
    ``r2_orbit_mean``, against the orbit mean ``(1/G) Σ_q ψ(g^q x)`` — the best an encoder can do
    when nothing in the input tells which member is the target."""
    from esae.metrics import r2_pooled

    n, order, d = acts.shape
    recon = torch.stack([reconstruct(sae, acts[:, p].to(sae.W_dec.device)) if not isinstance(sae, EquivariantTopKSAE)
                         else sae.decode(sae.encode(acts[:, p].to(sae.W_dec.device))) for p in range(order)], 1).cpu()
    flat = lambda t: t.reshape(-1, d)  # noqa: E731
    return {"r2_target": r2_pooled(flat(acts[:, :1].expand_as(acts)), flat(recon)),
            "r2_orbit_mean": r2_pooled(flat(acts.mean(1, keepdim=True).expand_as(acts)), flat(recon))}


@torch.no_grad()
def latent_statistics(sae: SAE, acts: Tensor, batch_size: int = 4096) -> dict[str, Tensor]:
    """Per-latent statistics over activations ``acts`` ``(n, d)``: ``frequency`` (fraction of rows
    where the latent fires), ``mean_active`` (its mean value when it fires, 0 if never) and
    ``top_row`` (the row that activates it most): each ``(F,)``."""
    count = torch.zeros(sae.cfg.d_sae)
    total = torch.zeros(sae.cfg.d_sae)
    best = torch.full((sae.cfg.d_sae,), -torch.inf)
    top = torch.zeros(sae.cfg.d_sae, dtype=torch.long)
    for start in range(0, acts.shape[0], batch_size):
        z = sae.encode(acts[start:start + batch_size].to(sae.W_dec.device)).cpu()
        count += (z != 0).sum(0)
        total += z.sum(0)
        val, row = z.max(0)
        better = val > best
        best[better], top[better] = val[better], row[better] + start
    return {"frequency": count / acts.shape[0], "mean_active": total / count.clamp_min(1), "top_row": top}


# ---------------------------------------------------------------------------------------------
# Understanding the features
# ---------------------------------------------------------------------------------------------

def data_basis(acts: Tensor, variance: float = 0.999) -> Tensor:
    """Orthonormal rows ``(r, d)`` spanning the principal subspace of activations ``acts``
    ``(n, d)`` (centred) that holds ``variance`` of their variance: where the base model's
    activations actually go. M is fitted only there — in the other directions nothing moves it
    from its identity start — so features are scored inside this span (:func:`feature_scores`)."""
    check_float("variance", variance, 0.0, 1.0, lo_open=True)
    centred = (acts - acts.mean(0)).double()
    _, sv, vh = torch.linalg.svd(centred, full_matrices=False)
    share = sv.pow(2).cumsum(0) / sv.pow(2).sum()
    rank = int((share < variance).sum()) + 1
    return vh[:rank].to(acts.dtype)


def feature_scores(w_dec: Tensor, m: Tensor, basis: Tensor | None = None) -> Tensor:
    """``cos(d_j, M d_j)`` for every dictionary row ``d_j`` of ``w_dec`` ``(F, d)``: ``(F,)``;
    with ``basis`` ``(r, d)`` (:func:`data_basis`) each row is first projected onto that span.

    For an orthogonal M with M⁴ = I the cosine is ``w₊₁ − w₋₁``, the fractions of the feature's
    energy on M's eigenvalue-+1 (invariant) and −1 eigenspaces (the ±i pairs, 90° rotations,
    contribute 0). A score ≥ τ therefore guarantees that at least a fraction τ of the feature
    lies in the invariant subspace; equivariant features (moving to another direction when the
    image turns) score near 0, sign-flipping ones near −1."""
    if basis is not None:
        w_dec = (w_dec @ basis.t()) @ basis
    moved = w_dec @ m.t()
    return F.cosine_similarity(w_dec, moved, dim=-1)


def invariant_fraction(w_dec: Tensor, m: Tensor, order: int = 4, basis: Tensor | None = None) -> Tensor:
    """Fraction of each dictionary row's energy in M's invariant subspace, ``d·Pd / ‖d‖²`` with
    the group average ``P = (1/|G|) Σ_p M^p`` (the projector onto the fixed subspace when M is
    an exact orthogonal representation): ``(F,)``, a cross-check of :func:`feature_scores`
    (rows projected onto ``basis`` first, as there)."""
    check_int("order", order, 1)
    if basis is not None:
        w_dec = (w_dec @ basis.t()) @ basis
    avg = sum(torch.linalg.matrix_power(m, p) for p in range(order)) / order
    return (w_dec * (w_dec @ avg.t())).sum(-1) / w_dec.pow(2).sum(-1).clamp_min(1e-12)


def classify_features(scores: Tensor, threshold: float) -> Tensor:
    """Boolean ``(F,)``: True for invariant features (``score ≥ threshold``)."""
    check_float("threshold", threshold, -1.0, 1.0)
    return scores >= threshold


@torch.no_grad()
def feature_images(sae: EquivariantTopKSAE, decode: Callable[[Tensor], Tensor], latents: list[int],
                   magnitude: Tensor, order: int | None = None) -> Tensor:
    """What each feature draws, in every orientation: ``(len(latents), order, *image)``.

    Entry ``[i, p]`` is ``decode(M^p (b + a_i d_i)) − decode(M^p b)`` — the base model's image of
    the bias-only reconstruction plus feature ``d_i`` at its typical magnitude ``a_i``
    (``magnitude`` ``(len(latents),)``), minus the bias-only image: the part of the picture the
    feature adds, rotated by ``M^p`` as the equivariant SAE would."""
    order = order or sae.cfg.group_order
    idx = torch.as_tensor(latents, dtype=torch.long, device=sae.W_dec.device)
    mag = torch.as_tensor(magnitude, dtype=sae.W_dec.dtype, device=sae.W_dec.device).expand(len(latents))
    with_feature = sae.b_dec[None] + mag[:, None] * sae.W_dec[idx]  # (L, d)
    out = []
    for p in range(order):
        mp = sae.m_power(p).t()
        out.append(decode(with_feature @ mp) - decode(sae.b_dec[None] @ mp))
    return torch.stack(out, 1).cpu()
