"""Next-token loss of a language model with the residual stream after one block replaced (chapter 7).

What chapter 7's ΔL evaluations need: :func:`replace_residual` swaps a block's output through a
forward hook; :func:`next_token_losses` computes per-token losses with the LM head in a chosen
precision (:func:`head_dtype`: float32, bfloat16 or an int8 head that recomputes in float32 every
logit within :data:`HEAD_MARGIN` nats of its row's maximum), over vocabulary blocks so the
``(tokens, vocabulary)`` logits never exist at once; :func:`delta_losses` replays the model once
from the clean residual stream of each layer and tabulates ΔL per variant (folded, unfolded,
own SAE, previous SAE, layer dropped) with bootstrap intervals over windows
(:func:`bootstrap_mean_ci`, :class:`LossTable`); :func:`layer_pruning` is evaluation 5.
Models, corpus and residual-stream activations: :mod:`esae.language_models`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from esae.checks import check_float, check_int
from esae.language_models import blocks
from esae.runtime import HEAD_DTYPES, progress

Tensor = torch.Tensor
HEAD_MARGIN = 10.0  # nats: the int8 head recomputes in float32 every logit within this of its row's maximum


# --------------------------------------------------------------------------------------------
# Next-token loss, optionally with the residual stream after one block replaced
# --------------------------------------------------------------------------------------------

ResidualEdit = Callable[[Tensor, Tensor], Tensor]
"""``edit(x_in, x_out) -> x_new``: given the residual stream entering a block ``(b, T, d)``
and leaving it ``(b, T, d)``, what the block should output instead (all positions but BOS)."""


@contextmanager
def replace_residual(model, layer: int, edit: ResidualEdit):
    """Within the context, block ``layer``'s output at every position except the first (BOS)
    is replaced by ``edit(block input, block output)`` through a forward hook."""
    check_int("layer", layer, 0, len(blocks(model)) - 1)

    def hook(module, args, kwargs, output):
        x_in = args[0] if args else kwargs["hidden_states"]
        x_out = output[0] if isinstance(output, tuple) else output
        new = x_out.clone()
        new[:, 1:] = edit(x_in[:, 1:], x_out[:, 1:]).to(x_out.dtype)
        return (new, *output[1:]) if isinstance(output, tuple) else new

    handle = blocks(model)[layer].register_forward_hook(hook, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


def _head_weight(model, dtype: torch.dtype) -> Tensor:
    """The LM head's weight (V, d) in ``dtype``, converted once per model and dtype."""
    weight = model.get_output_embeddings().weight
    if dtype == weight.dtype:
        return weight
    cached = getattr(model, "_esae_head", None)
    if cached is None or cached[0] != dtype:
        cached = (dtype, weight.detach().to(dtype))
        model._esae_head = cached
    return cached[1]


def head_dtype(choice: str = "auto", device: torch.device | str = "cpu", name: str = "loss_head_dtype") -> torch.dtype:
    """The vocabulary head's products in ΔL (:func:`delta_losses`): ``"float32"``, ``"bfloat16"``
    or ``"int8"`` as named; ``"auto"`` bfloat16 where it is native
    (:func:`esae.runtime.native_bfloat16`), else int8 on a CPU where oneDNN's int8 linear is
    present (:func:`esae.assignment.int8_available`), else float32. The int8 head is int8 products
    for every logit and float32 ones for each row's logits within :data:`HEAD_MARGIN` nats of its
    maximum (:func:`_int8_log_sum_exp`): 1.5–1.6× float32's speed on Gemma 3 270M's head on an
    AVX2 CPU, per-token losses within 10⁻³ nats of float32's on average (bias 10⁻⁵). The choice
    depends only on the machine, so a profile gives the same numbers on the same machine. ``name``
    is the parameter named in the error on a bad ``choice``."""
    from esae.assignment import int8_available
    from esae.runtime import native_bfloat16

    if choice not in HEAD_DTYPES:
        raise ValueError(f"{name} must be one of {', '.join(HEAD_DTYPES)}, got {choice!r}")
    cpu = torch.device(device).type == "cpu"
    if choice == "int8" and not (cpu and int8_available()):
        raise ValueError(f"{name} 'int8' needs a CPU with oneDNN's int8 linear (torch.ops.onednn.qlinear_pointwise); "
                         f"this {'CPU lacks it' if cpu else 'device is not a CPU'}: use auto, float32 or bfloat16")
    if choice != "auto":
        return getattr(torch, choice)
    if native_bfloat16(device):
        return torch.bfloat16
    return torch.int8 if cpu and int8_available() else torch.float32


def _int8_head(model, vocab_block: int) -> list:
    """The LM head as int8 blocks of ``vocab_block`` rows (:class:`esae.assignment.Int8Products`
    with plain products), packed once per model and block size."""
    from esae.assignment import Int8Products

    cached = getattr(model, "_esae_int8_head", None)
    if cached is None or cached[0] != vocab_block:
        weight = model.get_output_embeddings().weight.detach().float()
        cached = (vocab_block, [Int8Products(weight[s:s + vocab_block], block_size=min(vocab_block, 4096), cosine=False)
                                for s in range(0, weight.shape[0], vocab_block)])
        model._esae_int8_head = cached
    return cached[1]


def _int8_log_sum_exp(model, h: Tensor, vocab_block: int, cap: float | None, margin: float | None = None) -> Tensor:
    """log Σ_v exp(z_v) of the rows ``h`` (n, d) from int8 logits, made float32-exact where it
    matters: per vocabulary block, every logit within ``margin`` of its row's running maximum
    (a superset of those within ``margin`` of the final maximum) is recomputed in float32 by one
    sampled product, and the sum takes ``exp(z) − exp(z̃)`` for those as a correction. What is
    left in int8 lies more than ``margin`` nats below the row's best logit (``None``:
    :data:`HEAD_MARGIN`). On Gemma 3 270M's head (2,016 held-out predictions, 2-core AVX2 CPU;
    ``benchmarks/bench_lm_head.py``), margin 10 recomputes about 1,300 of 262,144 logits a row: the
    per-token loss is within 9.6·10⁻⁴ nats of float32's on average (8.6·10⁻³ at most, bias
    1.3·10⁻⁵) at 1.5–1.6× its speed; margin 12: 3.0·10⁻⁴, 1.4×; 14: 8·10⁻⁵, 1.1×. int8 alone was
    0.16 nats off."""
    margin = HEAD_MARGIN if margin is None else margin
    weight = model.get_output_embeddings().weight
    heads = _int8_head(model, vocab_block)
    n = h.shape[0]
    total, fix = h.new_zeros(n), h.new_zeros(n)
    best = h.new_full((n,), -float("inf"))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")
        for head, start in zip(heads, range(0, weight.shape[0], vocab_block)):
            z = head(h)  # (n, block) int8 logits
            if cap:
                z.div_(cap).tanh_().mul_(cap)
            best = torch.maximum(best, z.amax(dim=1))
            rows, cols = (z >= (best - margin)[:, None]).nonzero(as_tuple=True)  # sorted by row, then column
            if len(rows) == 0:
                total.add_(z.exp_().sum(dim=1))
                continue
            crow = torch.zeros(n + 1, dtype=torch.long)
            torch.cumsum(torch.bincount(rows, minlength=n), 0, out=crow[1:])
            pattern = torch.sparse_csr_tensor(crow, cols, h.new_zeros(len(cols)), size=z.shape)
            exact = torch.sparse.sampled_addmm(pattern, h, weight[start:start + z.shape[1]].T, beta=0.0).values()
            if cap:
                exact = torch.tanh(exact / cap) * cap
            fix.index_add_(0, rows, exact.exp_().sub_(z[rows, cols].exp_()))
            total.add_(z.exp_().sum(dim=1))
    return total.add_(fix).log_()


@torch.no_grad()
def _token_losses(model, hidden: Tensor, targets: Tensor, vocab_block: int = 16384,
                  head_dtype: torch.dtype = torch.float32) -> Tensor:
    """Cross-entropy of the LM head on final hidden states ``hidden`` (n, d) against ``targets``
    (n,), computed over vocabulary blocks so the (n, V) logits are never held at once; applies
    the config's final logit soft-capping if it has one. The head's products run in
    ``head_dtype`` (bfloat16 halves the time of Gemma's 262k-token head on CPUs with bf16
    units; accumulation stays in float32); ``torch.int8`` is the int8 head of
    :func:`_int8_log_sum_exp` (CPU; float32 for the logits that matter, :func:`head_dtype`).

    The log-sum-exp sums ``exp(z)`` of each block directly, without subtracting a running
    maximum first: float32 holds ``exp(z)`` for logits up to 88 and a sum of 262k of them for
    logits up to 75 (Gemma 3 270M's reach ±36), so this is the same number to float rounding
    and saves two passes over every block of logits (17 % of the head's CPU time). Rows whose
    sum overflows or underflows are recomputed with the maximum subtracted."""
    cap = getattr(model.config, "final_logit_softcapping", None)
    if head_dtype == torch.int8:
        weight, h = model.get_output_embeddings().weight, hidden.float()
        lse = _int8_log_sum_exp(model, h, vocab_block, cap)
    else:
        weight, h = _head_weight(model, head_dtype), hidden.to(head_dtype)
        lse = _log_sum_exp(weight, h, vocab_block, cap)
    bad = ~torch.isfinite(lse)
    if bool(bad.any()):  # overflow (inf) or every term underflowed (-inf): the shifted computation
        lse[bad] = _log_sum_exp(weight, h[bad].to(weight.dtype), vocab_block, cap, shifted=True)
    z_target = (h.float() * weight[targets].float()).sum(-1)
    if cap:
        z_target = torch.tanh(z_target / cap) * cap
    return lse - z_target


def _log_sum_exp(weight: Tensor, h: Tensor, vocab_block: int, cap: float | None, shifted: bool = False) -> Tensor:
    """log Σ_v exp(z_v) of the logits ``z = h weightᵀ`` (soft-capped if ``cap``) over vocabulary
    blocks, in ``h``'s dtype with float32 sums; ``shifted`` subtracts each block's maximum first
    (for rows whose plain sum overflows or underflows)."""
    def logits(start: int) -> Tensor:
        z = (h @ weight[start:start + vocab_block].T).float()
        return z.div_(cap).tanh_().mul_(cap) if cap else z

    total = None
    for start in range(0, weight.shape[0], vocab_block):
        z = logits(start)
        if shifted:
            top = z.amax(dim=-1, keepdim=True)
            block = z.sub_(top).exp_().sum(dim=-1).log_().add_(top[:, 0])
            total = block if total is None else torch.logaddexp(total, block)
        else:
            block = z.exp_().sum(dim=-1)
            total = block if total is None else total.add_(block)
    return total if shifted else total.log()


@torch.no_grad()
def next_token_losses(model, input_ids: Tensor, *, layer: int | None = None, edit: ResidualEdit | None = None,
                      batch_size: int = 4, head_dtype: torch.dtype = torch.float32) -> Tensor:
    """Per-token next-token cross-entropy (nats) of ``model`` on ``input_ids`` (n, T), for
    the predictions made at positions 1..T−2 (BOS's own prediction excluded): (n, T − 2).
    With ``layer`` and ``edit``, the residual stream after block ``layer`` is replaced
    (:func:`replace_residual`). ``head_dtype`` as in :func:`_token_losses`."""
    if (layer is None) != (edit is None):
        raise ValueError("layer and edit must be given together")
    device = next(model.parameters()).device
    out = []
    for start in range(0, input_ids.shape[0], batch_size):
        ids = input_ids[start:start + batch_size].to(device)
        if edit is None:
            hidden = model.model(input_ids=ids).last_hidden_state
        else:
            with replace_residual(model, layer, edit):
                hidden = model.model(input_ids=ids).last_hidden_state
        out.append(_losses_from_hidden(model, hidden, ids, head_dtype))
    return torch.cat(out)


def _losses_from_hidden(model, hidden: Tensor, ids: Tensor, head_dtype: torch.dtype) -> Tensor:
    """(b, T − 2) losses of the predictions at positions 1..T−2 from final hidden states (b, T, d)."""
    h = hidden[:, 1:-1].reshape(-1, hidden.shape[-1])
    return _token_losses(model, h, ids[:, 2:].reshape(-1), head_dtype=head_dtype).view(ids.shape[0], -1).cpu()


class _Replay(nn.Module):
    """Stands in for a decoder layer: returns ``value`` (block ``layer``'s output, given) or,
    with ``value=None``, its input unchanged (a block before it, whose work is already done);
    wrapped in a 1-tuple when the real layer returns a tuple."""

    def __init__(self, value: Tensor | None, as_tuple: bool):
        super().__init__()
        self.value, self.as_tuple = value, as_tuple

    def forward(self, hidden_states: Tensor, *args, **kwargs):
        out = hidden_states if self.value is None else self.value
        return (out,) if self.as_tuple else out


@contextmanager
def _resume_after(model, layer: int, output: Tensor, as_tuple: bool):
    """Within the context, a forward pass skips blocks ``0..layer`` and continues from
    ``output`` (b, T, d), taken as block ``layer``'s output: only the later blocks run."""
    layers = blocks(model)
    saved = [layers[j] for j in range(layer + 1)]
    try:
        for j in range(layer + 1):
            layers[j] = _Replay(output if j == layer else None, as_tuple)
        yield
    finally:
        for j, block in enumerate(saved):
            layers[j] = block


@torch.no_grad()
def _clean_states(model, input_ids: Tensor, batch_size: int, head_dtype: torch.dtype,
                  keep: Sequence[int]) -> tuple[Tensor, list[dict[int, Tensor]], bool, Tensor]:
    """One clean pass: per-token losses (n, T − 2), for each batch the outputs (b, T, d) of the
    blocks in ``keep`` (on the model's device), whether the blocks return tuples, and the
    first batch's final hidden states (b, T, d)."""
    device = next(model.parameters()).device
    losses, states, as_tuple, first = [], [], [False], None
    outs: dict[int, Tensor] = {}

    def hook(j):
        def fn(module, args, output):
            as_tuple[0] = isinstance(output, tuple)
            outs[j] = output[0] if as_tuple[0] else output
        return fn

    handles = [blocks(model)[j].register_forward_hook(hook(j)) for j in sorted(set(keep))]
    try:
        for start in range(0, input_ids.shape[0], batch_size):
            ids = input_ids[start:start + batch_size].to(device)
            hidden = model.model(input_ids=ids).last_hidden_state
            first = hidden if first is None else first
            losses.append(_losses_from_hidden(model, hidden, ids, head_dtype))
            states.append(dict(outs))
    finally:
        for h in handles:
            h.remove()
    return torch.cat(losses), states, as_tuple[0], first


def bootstrap_mean_ci(per_window: Tensor, n_boot: int = 2000, level: float = 0.95,
                      seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``per_window`` (n,) values (each the mean
    over one window's tokens, all windows the same length), resampling windows: tokens of one
    window are not independent, windows are."""
    check_int("n_boot", n_boot, 1)
    check_float("level", level, 0.0, 1.0, lo_open=True)
    values = per_window.double().numpy()
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), (n_boot, len(values)))].mean(1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


@dataclass
class LossTable:
    """Next-token loss with replaced residual streams: ``clean`` (mean nats per token),
    ``delta[pair][variant]`` the mean change ΔL, ``ci[pair][variant]`` its 95 % bootstrap
    interval over windows and ``stderr[pair][variant]`` the standard error over tokens (the
    same tokens for every variant, so differences are paired); ``n_tokens`` predictions per
    pair from ``n_windows`` windows; ``head_dtype`` of the LM head's products; ``pairs``, per
    variant, the pairs it was measured on; ``head_check``, when asked for, the ΔL of one
    (pair, variant) on the first batch of windows from the same hidden states with the head in
    ``head_dtype`` and in float32 (keys ``pair``, ``variant``, ``windows`` and the two dtypes)."""

    clean: float
    delta: dict[str, dict[str, float]]
    ci: dict[str, dict[str, tuple[float, float]]]
    stderr: dict[str, dict[str, float]]
    n_tokens: int
    n_windows: int
    head_dtype: str = "float32"
    pairs: dict[str, list[str]] = field(default_factory=dict)
    head_check: dict[str, Any] | None = None


def delta_losses(model, input_ids: Tensor, lm, variants: Sequence[str] = ("folded", "unfolded", "own", "previous",
                                                                           "layer_drop"),
                 *, decoding: str = "folded", pairs: Sequence[int] | None = None,
                 pairs_by_variant: Mapping[str, Sequence[int]] | None = None, batch_size: int = 4,
                 head_dtype: torch.dtype = torch.float32, check_head: bool = False, n_boot: int = 2000,
                 seed: int = 0) -> LossTable:
    """Evaluations 2 and 5, ΔL: for adjacent pairs ``(t, t+1)`` of ``lm``
    (:class:`esae.match_evaluation.LayerMatches`, consecutive blocks) and every variant of
    :func:`esae.match_evaluation.approximations` (matching methods with ``decoding``, and the
    baselines), replace the residual stream after block ``t+1`` by ``x̂(t+1)`` computed from the
    block's input ``x(t)`` (and its output ``x(t+1)``) and measure the change of next-token
    cross-entropy on ``input_ids`` (n, T), BOS excluded, with a bootstrap interval over windows
    (:func:`bootstrap_mean_ci`, ``n_boot``, ``seed``).

    Each variant is measured on ``pairs_by_variant[variant]`` if given there, else on ``pairs``
    (pair indices; default all). One clean pass keeps the needed blocks' outputs, so each
    replacement reruns only the blocks after the edited one and the head. ``check_head`` also
    recomputes the first variant's ΔL on the last measured pair's first batch of windows with
    a float32 head from the same hidden states (:attr:`LossTable.head_check`): the cost of a
    few head passes, no extra forward pass."""
    from esae.match_evaluation import approximations

    layers = list(lm.layers)
    if any(u != t + 1 for t, u in zip(layers[:-1], layers[1:])):
        raise ValueError(f"delta_losses needs consecutive blocks, got layers {layers}")
    default = list(range(len(layers) - 1)) if pairs is None else list(pairs)
    chosen = dict(pairs_by_variant or {})
    for v in chosen:
        if v not in variants:
            raise ValueError(f"each key of pairs_by_variant must be one of the variants {list(variants)}, got {v!r}")
    todo = {v: sorted(set(chosen.get(v, default))) for v in variants}
    for v, idx in todo.items():
        for i in idx:
            check_int(f"each pair index (variant {v!r})", i, 0, len(layers) - 2)
    measured = sorted(set().union(*todo.values())) if todo else []
    keep = sorted({layers[i + 1] for i in measured} | {layers[i + 1] - 1 for i in measured})
    clean, states, as_tuple, first_hidden = _clean_states(model, input_ids, batch_size, head_dtype, keep)
    device = next(model.parameters()).device
    delta, ci, stderr, check = {}, {}, {}, None
    jobs = [(i, v) for i in measured for v in variants if i in todo[v]]
    # the head check: the first variant measured on the last measured pair
    check_job = next((i, v) for i, v in jobs if i == measured[-1]) if check_head and jobs else None
    for i, variant in progress(jobs, desc="ΔL"):
        name, u = lm.pairs[i], layers[i + 1]
        edit = approximations(lm, i, decoding)[variant]
        out = []
        for b, start in enumerate(range(0, input_ids.shape[0], batch_size)):
            ids = input_ids[start:start + batch_size].to(device)
            x_in, x_out = states[b][u - 1], states[b][u]
            new = x_out.clone()
            new[:, 1:] = edit(x_in[:, 1:], x_out[:, 1:]).to(x_out.dtype)
            with _resume_after(model, u, new, as_tuple):
                hidden = model.model(input_ids=ids).last_hidden_state
            out.append(_losses_from_hidden(model, hidden, ids, head_dtype))
            if b == 0 and (i, variant) == check_job:
                dts = {str(dt).replace("torch.", ""): dt for dt in (head_dtype, torch.float32)}
                check = {"pair": name, "variant": variant, "windows": ids.shape[0]}
                check.update({k: float((_losses_from_hidden(model, hidden, ids, dt)
                                        - _losses_from_hidden(model, first_hidden, ids, dt)).double().mean())
                              for k, dt in dts.items()})
        diff = (torch.cat(out) - clean).double()
        delta.setdefault(name, {})[variant] = float(diff.mean())
        ci.setdefault(name, {})[variant] = bootstrap_mean_ci(diff.mean(1), n_boot, seed=seed)
        stderr.setdefault(name, {})[variant] = float(diff.std() / diff.numel() ** 0.5)
    return LossTable(float(clean.mean()), delta, ci, stderr, clean.numel(), clean.shape[0],
                     str(head_dtype).replace("torch.", ""), {v: [lm.pairs[i] for i in todo[v]] for v in variants},
                     check)


def layer_pruning(model, input_ids: Tensor, lm, batch_size: int = 4, **kwargs) -> dict[str, dict[str, float]]:
    """Evaluation 5: ΔL of replacing each block ``t+1`` by encode-permute-decode from ``x(t)``
    (folded matching), next to dropping the block outright. Per pair ``{"folded", "layer_drop"}``."""
    return delta_losses(model, input_ids, lm, variants=("folded", "layer_drop"), batch_size=batch_size,
                        **kwargs).delta
