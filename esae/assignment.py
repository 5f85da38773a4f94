"""Linear assignment between two sets of feature vectors: exact (dense) and sparse (k-NN graph).

SAE Match pairs feature ``i`` of A with feature ``π(i)`` of B so that ``Σ_i ‖a_i − b_π(i)‖²`` is
minimal. Because ``Σ‖a_i‖² + Σ‖b_j‖²`` does not depend on ``π``, this is the assignment that
maximises ``Σ_i a_i · b_π(i)``.

- :func:`exact_assignment` hands SciPy's ``linear_sum_assignment`` the dense ``(F, F)`` matrix of
  negative inner products: exact, but LAPJV on a dense matrix of two *unrelated* 16k SAEs takes
  minutes and a 65k problem needs 32 GiB for the matrix alone.
- :func:`sparse_assignment` keeps, for every feature of A, only its ``k`` best partners in B
  (and for every feature of B its ``k`` best in A), adds the edges of one feasible permutation as
  a fallback (a greedy matching on those candidates, completed arbitrarily) so that a full
  matching always exists, and solves the sparse problem exactly with SciPy's
  ``min_weight_full_bipartite_matching`` (LAPJVsp). Its answer is the exact optimum whenever the
  optimal pairs are among the candidates; :func:`assignment_gap` measures how far it is otherwise.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import min_weight_full_bipartite_matching

from esae.checks import check_choice, check_int

Tensor = torch.Tensor
SOLVERS = ("exact", "sparse")


def _check_vectors(a: Tensor, b: Tensor) -> None:
    if a.ndim != 2 or b.ndim != 2 or a.shape != b.shape:
        raise ValueError(f"vectors_a and vectors_b must both be (F, D) with equal shapes, got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}")


@torch.no_grad()
def negative_inner_products(a: Tensor, b: Tensor, block_size: int = 2048) -> np.ndarray:
    """``−a bᵀ`` (F, F) as float64 NumPy, ``block_size`` rows of ``a`` (F, D) at a time (float32 products)."""
    check_int("block_size", block_size, 1)
    out = np.empty((a.shape[0], b.shape[0]), dtype=np.float64)
    bt = b.float().T.contiguous()
    for start in range(0, a.shape[0], block_size):
        out[start:start + block_size] = torch.mm(a[start:start + block_size].float(), bt).neg_().cpu().numpy()
    return out


def exact_assignment(a: Tensor, b: Tensor, block_size: int = 2048) -> np.ndarray:
    """The permutation ``π`` (F,) int64 minimising ``Σ_i ‖a_i − b_π(i)‖²`` for ``a``, ``b`` (F, D),
    by ``linear_sum_assignment`` on the dense matrix of negative inner products."""
    _check_vectors(a, b)
    scores = negative_inner_products(a, b, block_size)
    rows, cols = linear_sum_assignment(scores)
    perm = np.empty(len(rows), dtype=np.int64)
    perm[rows] = cols
    return perm


@torch.no_grad()
def knn_candidates(a: Tensor, b: Tensor, k: int, block_size: int = 2048,
                   dtype: torch.dtype = torch.bfloat16) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candidate edges ``(rows, cols, products)`` (sorted by row, deduplicated): for each row
    ``i`` of ``a`` its ``k`` nearest rows of ``b`` by squared distance and its ``k`` largest
    inner products ``a_i · b_j``, and the same for each row ``j`` of ``b`` among the rows of
    ``a``; ``products`` holds each edge's ``a_i · b_j``. Both criteria are kept because the
    optimum mixes them: the assignment maximises inner products, but features with large norms
    would be everyone's inner-product candidates, while distance favours partners of similar
    norm. One blockwise pass of products in ``dtype`` (bfloat16 halves the time on CPUs with
    bf16 units, at a relative error of about 1e-3 per product) yields both the candidates and
    their weights, so no (edges × D) gather is needed."""
    _check_vectors(a, b)
    F = a.shape[0]
    check_int("k", k, 1, F)
    check_int("block_size", block_size, 1)
    ad, bd = a.to(dtype), b.to(dtype)
    bt = bd.T.contiguous()
    na, nb = a.float().pow(2).sum(1), b.float().pow(2).sum(1)
    keys, vals = [], []
    col_crit = torch.full((F, 2 * k), -float("inf"))
    col_prod = torch.zeros((F, 2 * k))
    col_idx = torch.zeros((F, 2 * k), dtype=torch.long)
    for start in range(0, F, block_size):
        s = torch.mm(ad[start:start + block_size], bt).float()  # (block, F): a·b
        n = s.shape[0]
        rows = torch.arange(start, start + n)[:, None]
        best = torch.cat([s.topk(k, dim=1).indices, (2 * s - nb[None, :]).topk(k, dim=1).indices], dim=1)
        keys.append((rows * F + best).flatten().numpy())
        vals.append(s.gather(1, best).flatten().numpy())
        # for every column, the best rows of this block on both criteria, merged with the best so far
        kk = min(k, n)
        for crit, lo in ((s, 0), (2 * s - na[start:start + n, None], k)):
            v, i = crit.topk(kk, dim=0)
            merged_v = torch.cat([col_crit[:, lo:lo + k], v.T], dim=1)
            merged_p = torch.cat([col_prod[:, lo:lo + k], s.gather(0, i).T], dim=1)
            merged_i = torch.cat([col_idx[:, lo:lo + k], i.T + start], dim=1)
            top = merged_v.topk(k, dim=1).indices
            col_crit[:, lo:lo + k] = merged_v.gather(1, top)
            col_prod[:, lo:lo + k] = merged_p.gather(1, top)
            col_idx[:, lo:lo + k] = merged_i.gather(1, top)
    valid = torch.isfinite(col_crit)
    cols = torch.arange(F)[:, None].expand_as(col_idx)
    keys.append((col_idx[valid] * F + cols[valid]).numpy())
    vals.append(col_prod[valid].numpy())
    key, first = np.unique(np.concatenate(keys), return_index=True)
    return key // F, key % F, np.concatenate(vals).astype(np.float64)[first]


def _greedy_completion(rows: np.ndarray, cols: np.ndarray, weights: np.ndarray, n: int) -> np.ndarray:
    """A permutation built greedily from the lightest candidate edges, features left over paired
    arbitrarily: the fallback that guarantees the sparse problem has a full matching."""
    perm = np.full(n, -1, dtype=np.int64)
    taken = np.zeros(n, dtype=bool)
    for e in np.argsort(weights, kind="stable"):
        i, j = rows[e], cols[e]
        if perm[i] < 0 and not taken[j]:
            perm[i], taken[j] = j, True
    free_rows, free_cols = np.flatnonzero(perm < 0), np.flatnonzero(~taken)
    perm[free_rows] = free_cols
    return perm


@torch.no_grad()
def sparse_assignment(a: Tensor, b: Tensor, k: int = 32, block_size: int = 2048,
                      dtype: torch.dtype = torch.bfloat16) -> np.ndarray:
    """The permutation ``π`` (F,) int64 minimising ``Σ_i ‖a_i − b_π(i)‖²`` over the candidate
    edges of :func:`knn_candidates` plus a greedy fallback permutation, solved exactly on that
    sparse graph by SciPy's ``min_weight_full_bipartite_matching``. Equal to
    :func:`exact_assignment`'s optimum when the optimal pairs are candidates."""
    _check_vectors(a, b)
    F = a.shape[0]
    k = min(k, F)
    rows, cols, w = knn_candidates(a, b, k, block_size, dtype)
    fallback = _greedy_completion(rows, cols, -w, F)
    extra = np.setdiff1d(np.arange(F) * F + fallback, rows * F + cols, assume_unique=True)
    rows = np.concatenate([rows, extra // F])
    cols = np.concatenate([cols, extra % F])
    w = np.concatenate([w, _edge_inner_products(a, b, extra // F, extra % F)])
    # every full matching has F edges, so a constant shift keeps the optimum; it makes every
    # weight strictly positive (a sparse matrix cannot store an edge of weight 0)
    weights = w.max() - w + 1.0
    graph = csr_matrix((weights, (rows, cols)), shape=(F, F))
    _, perm = min_weight_full_bipartite_matching(graph)
    return perm.astype(np.int64)


@torch.no_grad()
def _edge_inner_products(a: Tensor, b: Tensor, rows: np.ndarray, cols: np.ndarray,
                         chunk: int = 1 << 15) -> np.ndarray:
    """``a_rows[e] · b_cols[e]`` for every edge (float32 products, float64 result: they only
    rank edges; :func:`total_cost` and ``match`` recompute costs in float64)."""
    out = np.empty(len(rows), dtype=np.float64)
    af, bf = a.float(), b.float()
    for s in range(0, len(rows), chunk):
        r = torch.as_tensor(rows[s:s + chunk], device=a.device)
        c = torch.as_tensor(cols[s:s + chunk], device=b.device)
        out[s:s + chunk] = torch.einsum("ed,ed->e", af[r], bf[c]).double().cpu().numpy()
    return out


def assign(a: Tensor, b: Tensor, solver: str = "exact", k: int = 32, block_size: int = 2048) -> np.ndarray:
    """:func:`exact_assignment` or :func:`sparse_assignment` by ``solver`` name."""
    check_choice("solver", solver, SOLVERS)
    return exact_assignment(a, b, block_size) if solver == "exact" else sparse_assignment(a, b, k, block_size)


@torch.no_grad()
def total_cost(a: Tensor, b: Tensor, perm: np.ndarray, block_size: int = 8192) -> float:
    """``Σ_i ‖a_i − b_perm(i)‖²`` in float64."""
    total = 0.0
    for s in range(0, len(perm), block_size):
        idx = torch.as_tensor(perm[s:s + block_size], device=b.device)
        total += float((a[s:s + block_size].double() - b[idx].double()).pow(2).sum())
    return total


def assignment_gap(a: Tensor, b: Tensor, perm: np.ndarray, optimum: np.ndarray) -> float:
    """Relative objective gap ``(cost(perm) − cost(optimum)) / cost(optimum)`` (0 when ``perm`` is optimal)."""
    best = total_cost(a, b, optimum)
    return (total_cost(a, b, perm) - best) / best if best > 0 else 0.0
