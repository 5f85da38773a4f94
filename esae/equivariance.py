"""Fitting the matrix M that explains how activations transform (chapter 4).

For a cyclic group G = {g^p} acting on inputs and a network ψ with activations in R^d, M is
fitted to minimise the paper's equation (3),

    L_M = E_{x, p=1..|G|} ‖ψ(g^p x) − M^p ψ(x)‖²,

starting from the identity and optimised with Adam. Beyond the paper this module offers a
closed-form warm start (the least-squares solution for p = 1) and two ways to impose the
constraint an exact representation satisfies, M^|G| = I: a penalty on ‖M^|G| − I‖², and an
exact parametrisation M = S R S⁻¹ with R a fixed block-diagonal matrix whose eigenvalues are
|G|-th roots of unity (see :func:`fit_m`).

Conventions: ``acts`` is ``(n, d)`` holding ψ(x); ``acts_rotated`` is ``(P, n, d)`` with
``acts_rotated[p - 1] = ψ(g^p x)`` for p = 1..P, where P is |G| or |G| − 1 (then ψ(g^|G| x) =
ψ(x) is appended, as the paper's sum runs to p = |G|). Activations are row vectors, so
"M ψ" is computed as ``acts @ M.T``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from esae.metrics import r2_per_dim, r2_pooled
from esae.checks import check_choice, check_float, check_int
from esae.runtime import progress

Tensor = torch.Tensor

INITS = ("identity", "lstsq")
CONSTRAINTS = ("none", "penalty", "exact")
SCHEDULES = ("constant", "cosine")


@dataclass(frozen=True)
class FitConfig:
    """How M is fitted. ``init``: ``identity`` (the paper) or ``lstsq`` (closed-form warm start
    for p = 1); ``constraint``: ``none`` (the paper), ``penalty`` (adds ``penalty · ‖M^|G| − I‖²_F / d``)
    or ``exact`` (M = S R S⁻¹ with R fixed by the unconstrained fit's eigenvalues snapped to the
    nearest roots of unity, S learned); ``schedule``: ``constant`` learning rate (the paper) or
    ``cosine`` annealing to 0 over the run (the constrained fits: two objectives pulling against
    each other make Adam's last iterates oscillate at a constant rate)."""

    order: int = 4
    epochs: int = 150
    batch_size: int = 64
    lr: float = 1e-3
    init: str = "identity"
    constraint: str = "none"
    penalty: float = 1.0
    seed: int = 0
    schedule: str = "constant"
    version: int = 2  # 2: the least-squares start shrinks towards I (was 0)

    def __post_init__(self) -> None:
        check_int("order", self.order, 1)
        check_int("epochs", self.epochs, 1)
        check_int("batch_size", self.batch_size, 1)
        check_float("lr", self.lr, 0.0, 1.0, lo_open=True)
        check_choice("init", self.init, INITS)
        check_choice("constraint", self.constraint, CONSTRAINTS)
        check_float("penalty", self.penalty, 0.0)
        check_int("seed", self.seed, 0)
        check_choice("schedule", self.schedule, SCHEDULES)


@dataclass
class FitResult:
    """The fitted ``m`` ``(d, d)`` and the training ``history``: one dict per epoch with the
    mean training ``loss``, elapsed ``seconds`` and, when evaluation data was given, held-out ``r2``."""

    m: Tensor
    history: list[dict[str, float]] = field(default_factory=list)


def _check_acts(acts: Tensor, acts_rotated: Tensor, order: int) -> Tensor:
    """Validate shapes; return the (order, n, d) targets for p = 1..order."""
    check_int("order", order, 1)
    if not isinstance(acts, Tensor) or acts.ndim != 2:
        raise ValueError(f"acts must be a tensor (n, d), got shape {tuple(getattr(acts, 'shape', ()))}")
    if not isinstance(acts_rotated, Tensor) or acts_rotated.ndim != 3 or acts_rotated.shape[1:] != acts.shape:
        raise ValueError(f"acts_rotated must be (P, n, d) = (P, {acts.shape[0]}, {acts.shape[1]}) with "
                         f"acts_rotated[p-1] = ψ(g^p x), got {tuple(getattr(acts_rotated, 'shape', ()))}")
    powers = acts_rotated.shape[0]
    if powers == order - 1:
        return torch.cat([acts_rotated, acts[None]])
    if powers != order:
        raise ValueError(f"acts_rotated must hold P = order or order - 1 powers (order={order}), got P={powers}")
    return acts_rotated


def transform(acts: Tensor, m: Tensor, p: int) -> Tensor:
    """``M^p ψ`` for row-vector activations ``(n, d)``: ``acts @ (M^p)^T``."""
    return acts @ torch.linalg.matrix_power(m, p).T


def _powers_of(acts: Tensor, m: Tensor, order: int) -> Tensor:
    """Stack ``M^p ψ`` for p = 1..order: ``(order, n, d)``."""
    out, y = [], acts
    for _ in range(order):
        y = y @ m.T
        out.append(y)
    return torch.stack(out)


def r2(acts: Tensor, acts_rotated: Tensor, m: Tensor, order: int = 4) -> dict[str, object]:
    """How well ``M^p ψ(x)`` predicts ``ψ(g^p x)``, for each power p = 1..order, and averaged over
    the **non-trivial powers p = 1..order − 1** (p = order, where g^order = e, is trivially 1 for
    M = I and would flatter every baseline; it stays in the per-power dicts).

    Two definitions are reported (see :mod:`esae.metrics`): ``pooled`` — one minus the residual
    sum of squares over the total sum of squares around the per-dimension mean, pooled over all
    dimensions (dimensions weigh by their variance); ``per_dim`` — the same ratio computed per
    dimension and averaged (scikit-learn's ``r2_score`` default). Returns
    ``{"pooled": {p: r2}, "per_dim": {p: r2}, "pooled_mean": .., "per_dim_mean": .., "powers": [1..order-1]}``.
    """
    targets = _check_acts(acts, acts_rotated, order)
    with torch.no_grad():
        preds = _powers_of(acts, m.to(acts.dtype), order)
    pooled = {p + 1: r2_pooled(targets[p], preds[p]) for p in range(order)}
    per_dim = {p + 1: r2_per_dim(targets[p], preds[p]) for p in range(order)}
    powers = list(range(1, order)) if order > 1 else [1]
    return {"pooled": pooled, "per_dim": per_dim, "powers": powers,
            "pooled_mean": sum(pooled[p] for p in powers) / len(powers),
            "per_dim_mean": sum(per_dim[p] for p in powers) / len(powers)}


def r2_definitions(acts: Tensor, acts_rotated: Tensor, m: Tensor, order: int = 4) -> dict[str, float]:
    """``M^p ψ(x)`` against ``ψ(g^p x)`` under every candidate definition of R² in
    :data:`esae.metrics.R2_DEFINITIONS`, each averaged over p = 1..order − 1. ``acts`` ``(n, d)``,
    ``acts_rotated`` ``(order − 1 or order, n, d)``, ``m`` ``(d, d)``."""
    from esae.metrics import R2_DEFINITIONS

    targets = _check_acts(acts, acts_rotated, order)
    with torch.no_grad():
        preds = _powers_of(acts.double(), m.double(), order)
    powers = range(1, order) if order > 1 else [1]
    return {name: sum(fn(targets[p - 1].double(), preds[p - 1]) for p in powers) / len(powers)
            for name, fn in R2_DEFINITIONS.items()}


def lstsq_m(acts: Tensor, acts_next: Tensor, ridge: float = 1e-4) -> Tensor:
    """Closed-form least-squares M with ``acts_next ≈ acts @ M.T`` (both ``(n, d)``).

    A small ridge (``ridge`` times the mean activation energy) shrinks M towards the identity:
    ``min ‖acts M^T − acts_next‖² + λ‖M − I‖²``. Directions the data never visits (dead units,
    rank deficiency) thus keep M = I — where the paper's identity start leaves them too —
    instead of arbitrary values that would blow up under the powers M^p, or zeros that would
    make M^4 = I fail there for no reason the data shows."""
    a, b = acts.double(), acts_next.double()
    gram = a.T @ a
    lam = ridge * gram.diagonal().mean().clamp_min(1e-12)
    eye = torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
    return torch.linalg.solve(gram + lam * eye, a.T @ b + lam * eye).T.to(acts.dtype)


def roots_of_unity_block(eigenvalues: Tensor, order: int) -> tuple[Tensor, Tensor]:
    """Snap eigenvalues to the nearest ``order``-th roots of unity and build the real block-diagonal
    R with those eigenvalues (1×1 blocks for ±1, 2×2 rotation blocks for conjugate pairs).
    Returns ``(R, snapped)``; R satisfies ``R^order = I`` exactly."""
    roots = torch.exp(2j * torch.pi * torch.arange(order, dtype=torch.float64) / order)
    snapped = roots[(eigenvalues[:, None] - roots[None]).abs().argmin(1)]
    real = snapped[snapped.imag.abs() < 1e-9].real
    upper = snapped[snapped.imag > 1e-9]          # one of each conjugate pair
    lower = snapped[snapped.imag < -1e-9]
    n_pairs = min(len(upper), len(lower))
    # unmatched complex roots (possible only when the snapping breaks a pair) become real ±1
    extra = torch.cat([upper[n_pairs:], lower[n_pairs:]])
    real = torch.cat([real, torch.where(extra.real >= 0, 1.0, -1.0).to(real.dtype)])
    blocks = [torch.tensor([[float(v)]]) for v in real]
    for z in upper[:n_pairs]:
        c, s = float(z.real), float(z.imag)
        blocks.append(torch.tensor([[c, -s], [s, c]]))
    return torch.block_diag(*blocks), snapped


def _real_eigenbasis(m: Tensor) -> Tensor:
    """A real basis S whose columns follow the order used by :func:`roots_of_unity_block`
    (real eigenvectors first, then real and imaginary parts of one vector per conjugate pair)."""
    vals, vecs = torch.linalg.eig(m.double())
    order_real = [i for i in range(len(vals)) if abs(vals[i].imag) < 1e-9]
    order_pos = [i for i in range(len(vals)) if vals[i].imag >= 1e-9]
    cols = [vecs[:, i].real for i in order_real]
    for i in order_pos:
        cols += [vecs[:, i].real, -vecs[:, i].imag]
    return torch.stack(cols[: m.shape[0]], 1)


def fit_m(acts: Tensor, acts_rotated: Tensor, config: FitConfig = FitConfig(), *,
          eval_data: tuple[Tensor, Tensor] | None = None, m_init: Tensor | None = None,
          device: torch.device | str | None = None) -> FitResult:
    """Fit M ``(d, d)`` on ``acts`` ``(n, d)`` and ``acts_rotated`` ``(P, n, d)`` (module docstring).

    Mini-batches of ``config.batch_size`` samples, ``config.epochs`` passes, Adam at ``config.lr``,
    the loss the mean over powers p = 1..|G| of the per-element squared error. ``eval_data``
    (held-out ``acts``, ``acts_rotated``) adds a held-out pooled R² to each epoch's history.
    ``m_init`` overrides the start (the ``exact`` constraint uses it to choose R and S; without it
    an unconstrained fit with the same config is run first).
    """
    order = config.order
    targets = _check_acts(acts, acts_rotated, order)
    device = torch.device(device) if device is not None else acts.device
    gen = torch.Generator().manual_seed(config.seed)
    x = acts.to(device, torch.float32)
    y = targets.to(device, torch.float32)
    n, d = x.shape
    eye = torch.eye(d, device=device)

    if config.constraint == "exact":
        base = m_init if m_init is not None else fit_m(
            acts, acts_rotated, FitConfig(**{**config.__dict__, "constraint": "none"}), device=device).m
        r_block, _ = roots_of_unity_block(torch.linalg.eigvals(base.double().cpu()), order)
        # float64: S may be ill-conditioned, and M^|G| = I must hold to float precision
        s_param = torch.nn.Parameter(_real_eigenbasis(base.cpu()).to(device))
        r_block = r_block.double().to(device)
        params = [s_param]

        def current() -> Tensor:
            # M = S R S⁻¹, i.e. Sᵀ Mᵀ = (S R)ᵀ
            return torch.linalg.solve(s_param.T, (s_param @ r_block).T).T.float()
    else:
        if m_init is not None:
            start = m_init
        elif config.init == "lstsq":
            start = lstsq_m(x, y[0])
        else:
            start = eye
        m_param = torch.nn.Parameter(start.detach().clone().float().to(device))
        params = [m_param]

        def current() -> Tensor:
            return m_param

    opt = torch.optim.Adam(params, lr=config.lr)
    n_steps = config.epochs * -(-n // config.batch_size)
    sched = (torch.optim.lr_scheduler.CosineAnnealingLR(opt, n_steps) if config.schedule == "cosine"
             else None)
    history: list[dict[str, float]] = []
    start_time = time.perf_counter()
    bar = progress(range(config.epochs), desc=f"fit M ({config.init}, {config.constraint})")
    for epoch in bar:
        perm = torch.randperm(n, generator=gen).to(device)
        total = 0.0
        for idx in perm.split(config.batch_size):
            m = current()
            loss = (_powers_of(x[idx], m, order) - y[:, idx]).pow(2).mean()
            if config.constraint == "penalty" and config.penalty > 0:
                loss = loss + config.penalty * (torch.linalg.matrix_power(m, order) - eye).pow(2).sum() / d
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            total += float(loss.detach()) * len(idx)
        record = {"epoch": epoch + 1, "loss": total / n, "seconds": time.perf_counter() - start_time}
        if eval_data is not None:
            with torch.no_grad():
                record["r2"] = float(r2(*(t.to(device) for t in eval_data), current().detach(), order)["pooled_mean"])
        history.append(record)
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(loss=f"{record['loss']:.4g}")
    with torch.no_grad():
        m_final = current().detach().cpu()
    return FitResult(m_final, history)


def orbit_activations(model: Callable[[Tensor], Tensor] | torch.nn.Module, images: Tensor, order: int = 4, *,
                      act: Callable[[int, Tensor], Tensor] | None = None, batch_size: int = 1024,
                      device: torch.device | str | None = None) -> tuple[Tensor, Tensor]:
    """ψ of ``images`` ``(n, ...)`` and of their transforms, ready for :func:`fit_m` and :func:`r2`:
    returns ``acts`` ``(n, d)`` and ``acts_rotated`` ``(order - 1, n, d)`` with
    ``acts_rotated[p - 1] = ψ(g^p x)``, both on the CPU.

    ``model``: any callable ``activations(inputs) -> (n, d)`` (your model up to the layer you
    study), or one of the book's base autoencoders; ``act(p, inputs)``: the action of ``g^p`` on
    inputs (default: rotation by ``p × 90°`` of the last two axes, images ``(n, C, H, H)`` of any
    size and channel count). See :func:`esae.orbits.orbit`."""
    from esae.orbits import orbit

    acts = orbit(model, images, order, act=act, batch_size=batch_size, device=device)
    return acts[:, 0].contiguous(), acts[:, 1:].transpose(0, 1).contiguous()


VARIANTS = {
    "paper": dict(init="identity", constraint="none"),
    "warm_start": dict(init="lstsq", constraint="none"),
    "penalty": dict(init="lstsq", constraint="penalty"),
    "exact": dict(init="lstsq", constraint="exact"),
}


def variant_config(variant: str, *, epochs: int, constrained_epochs: int, batch_size: int, lr: float,
                   penalty: float = 1.0, seed: int = 0, order: int = 4, paper_epochs: int | None = None) -> FitConfig:
    """The :class:`FitConfig` of one of chapter 4's :data:`VARIANTS`: ``paper`` (Adam from the
    identity for ``paper_epochs``, or ``epochs`` when it is None), ``warm_start`` (the least-squares
    start, ``epochs``), ``penalty``/``exact`` (M^order = I imposed, for ``constrained_epochs`` with a
    cosine-annealed rate)."""
    check_choice("variant", variant, VARIANTS)
    constrained = VARIANTS[variant]["constraint"] != "none"
    if constrained:
        n_epochs = constrained_epochs
    else:
        n_epochs = paper_epochs if variant == "paper" and paper_epochs is not None else epochs
    return FitConfig(order=order, epochs=n_epochs, batch_size=batch_size,
                     lr=lr, penalty=penalty, seed=seed, schedule="cosine" if constrained else "constant",
                     **VARIANTS[variant])
