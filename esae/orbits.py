"""Activations of any model over the orbits of its inputs under a cyclic group (chapters 4, 5).

What a researcher brings is two things: ``activations(inputs) -> (n, d)``, their model up to the
layer studied (any callable; an output ``(n, ...)`` is flattened to ``(n, d)``), and the group's
action on inputs, ``act(p, inputs) -> inputs`` for ``p = 0..order − 1``. The default action is
C4 on images: ``torch.rot90`` by ``p × 90°`` counter-clockwise on the last two axes
(:meth:`esae.groups.CyclicGroup.act`), so images ``(n, C, H, H)`` of any channel count and size
work as they are. :func:`orbit` returns ``(n, order, d)`` with ``[i, p] = ψ(g^p x_i)``; that is
what :func:`esae.sae_training.train_sae` trains on, and :func:`esae.equivariance.orbit_activations`
splits it into the ``(acts, acts_rotated)`` pair :func:`esae.equivariance.fit_m` fits M on.

The book's own base autoencoders (:mod:`esae.autoencoders`) are accepted in place of the
callable: their ``encode`` is used, exactly as chapters 4 and 5 do. :func:`synthetic_orbit` makes
orbit activations with an exactly known M, for tests and benchmarks.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from esae.checks import check_choice, check_int

Tensor = torch.Tensor
Activations = Callable[[Tensor], Tensor]
Action = Callable[[int, Tensor], Tensor]


def default_action(order: int = 4) -> Action:
    """C_order acting on images ``(..., H, H)`` by rotations of ``p · 360°/order`` (order 1, 2 or 4)."""
    from esae.groups import CyclicGroup

    group = CyclicGroup(order)
    if 4 % order:
        raise ValueError(f"order must be 1, 2 or 4 for the default rotation action (pass act= for another "
                         f"group action), got {order}")
    return group.act


def _is_base_model(model: object) -> bool:
    """One of the book's base autoencoders (their ``encode`` is the studied activation)."""
    from esae.autoencoders import CNNAutoencoder, MLPAutoencoder

    return isinstance(model, (MLPAutoencoder, CNNAutoencoder))


def activations_of(model: Activations | torch.nn.Module, inputs: Tensor, *, batch_size: int = 1024,
                   device: torch.device | str | None = None) -> Tensor:
    """``ψ(inputs)`` ``(n, d)`` on the CPU, computed without gradients in batches of ``batch_size``.

    ``model`` is a callable ``(b, ...) -> (b, ...)`` (outputs flattened to ``(b, d)``), or a base
    autoencoder of :mod:`esae.autoencoders` (then :func:`esae.autoencoders.activations`, its ``encode``).
    With ``device``, each batch of inputs is moved there before the call (the callable's
    parameters are the caller's business)."""
    if not isinstance(inputs, Tensor) or inputs.ndim < 1 or inputs.shape[0] == 0:
        shape = tuple(inputs.shape) if isinstance(inputs, Tensor) else type(inputs).__name__
        raise ValueError(f"inputs must be a tensor (n, ...) with n >= 1, got {shape}")
    check_int("batch_size", batch_size, 1)
    if _is_base_model(model):
        from esae.autoencoders import activations

        return activations(model, inputs, batch_size=batch_size, device=device).cpu()
    if not callable(model):
        raise ValueError(f"model must be a callable activations(inputs) -> (n, d), got {type(model).__name__}")
    out = []
    with torch.no_grad():
        for start in range(0, inputs.shape[0], batch_size):
            batch = inputs[start:start + batch_size]
            if device is not None:
                batch = batch.to(device)
            acts = model(batch)
            if not isinstance(acts, Tensor) or acts.ndim < 1 or acts.shape[0] != batch.shape[0]:
                shape = tuple(acts.shape) if isinstance(acts, Tensor) else type(acts).__name__
                raise ValueError(f"activations(inputs) must return a tensor ({batch.shape[0]}, d) for "
                                 f"{batch.shape[0]} inputs, got {shape}")
            out.append(acts.reshape(acts.shape[0], -1).detach().cpu())
    return torch.cat(out)


def orbit(model: Activations | torch.nn.Module, inputs: Tensor, order: int = 4, *, act: Action | None = None,
          batch_size: int = 1024, device: torch.device | str | None = None) -> Tensor:
    """Activations of every transform of ``inputs`` ``(n, ...)``: ``(n, order, d)`` on the CPU with
    ``[i, p] = ψ(g^p x_i)`` and ``p = 0`` the input itself.

    ``model``: see :func:`activations_of`. ``act(p, inputs)`` is the action of ``g^p`` on a batch
    of inputs, returning the same shape (default: :func:`default_action`, rotation of the last
    two axes, for images ``(n, C, H, H)``)."""
    check_int("order", order, 1)
    act = act or default_action(order)
    if not isinstance(inputs, Tensor):
        raise ValueError(f"inputs must be a tensor (n, ...), got {type(inputs).__name__}")
    per_power = []
    for p in range(order):
        moved = inputs if p == 0 else act(p, inputs)
        if not isinstance(moved, Tensor) or moved.shape != inputs.shape:
            shape = tuple(moved.shape) if isinstance(moved, Tensor) else type(moved).__name__
            raise ValueError(f"act({p}, inputs) must return inputs of shape {tuple(inputs.shape)}, got {shape}")
        per_power.append(activations_of(model, moved, batch_size=batch_size, device=device))
    return torch.stack(per_power, 1)


def synthetic_orbit(n: int, d: int = 256, *, n_atoms: int = 512, active: int = 8, invariant_dims: int | None = None,
                    order: int = 4, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Synthetic orbit activations with an exactly known M, for tests and benchmarks.

    M ``(d, d)`` is an orthogonal representation of C_order (order 2 or 4): ``Q R Qᵀ`` with R the
    identity on the first ``invariant_dims`` (default d/4) coordinates and 2×2 rotations by
    360°/order elsewhere. Canonical activations are sums of ``active`` of ``n_atoms`` random
    dictionary atoms with positive magnitudes; ``acts[i, p] = M^p acts[i, 0]``. Returns
    ``(acts (n, order, d), M)``."""
    check_int("n", n, 1)
    check_int("d", d, 2)
    check_choice("order", order, (2, 4))
    invariant_dims = d // 4 if invariant_dims is None else invariant_dims
    check_int("invariant_dims", invariant_dims, 0, d)
    if (d - invariant_dims) % 2:
        raise ValueError(f"d - invariant_dims must be even (2×2 rotation blocks), got {d - invariant_dims}")
    check_int("active", active, 1, n_atoms)
    gen = torch.Generator().manual_seed(seed)
    angle = 2 * math.pi / order
    block = torch.tensor([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    r = torch.block_diag(torch.eye(invariant_dims), *[block] * ((d - invariant_dims) // 2))
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=gen))
    m = q @ r @ q.t()
    atoms = F.normalize(torch.randn(n_atoms, d, generator=gen), dim=-1)
    chosen = torch.rand(n, n_atoms, generator=gen).topk(active, dim=-1).indices
    mags = torch.rand(n, active, generator=gen) + 0.5
    canonical = F.embedding_bag(chosen, atoms, mode="sum", per_sample_weights=mags)
    acts = torch.stack([canonical @ torch.linalg.matrix_power(m, p).t() for p in range(order)], 1)
    return acts, m
