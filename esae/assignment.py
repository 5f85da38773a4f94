"""Linear assignment between two sets of feature vectors: exact (dense) and sparse (k-NN graph).

SAE Match pairs feature ``i`` of A with feature ``π(i)`` of B so that ``Σ_i ‖a_i − b_π(i)‖²`` is
minimal. Because ``Σ‖a_i‖² + Σ‖b_j‖²`` does not depend on ``π``, this is the assignment that
maximises ``Σ_i a_i · b_π(i)``.

- :func:`exact_assignment` hands SciPy's ``linear_sum_assignment`` the dense ``(F, F)`` matrix of
  negative inner products: exact, but LAPJV on a dense matrix of two *unrelated* 16k SAEs takes
  minutes and a 65k problem needs 32 GiB for the matrix alone.
- :func:`sparse_assignment` keeps, for every feature of A, its ``k`` partners in B of highest
  *cosine* similarity (and for every feature of B its ``k`` best in A), found in one blockwise
  pass of products of the normalised vectors (bfloat16 where the hardware has it, float32
  elsewhere: :func:`esae.runtime.matmul_dtype`). Cosine, not the raw inner product or the
  distance, because the optimum trades the two: features with large norms would be everyone's
  inner-product candidates and distance favours partners of similar norm, so on two unrelated
  16k SAEs half of the optimal pairs lie beyond either criterion's top 16, while 99 % lie within
  the top 29 by cosine (``benchmarks/bench_sae_match.py``). If the candidate graph has no
  perfect matching, a maximum matching on it, completed arbitrarily, is added as fallback
  edges. The edges' weights come from the same pass (cosine × norms) and the sparse problem is
  solved exactly by SciPy's ``min_weight_full_bipartite_matching`` (LAPJVsp). The answer is the exact optimum
  whenever the optimal pairs are among the candidates; :func:`assignment_gap` measures how far
  it is otherwise.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import maximum_bipartite_matching, min_weight_full_bipartite_matching

from esae.checks import check_choice, check_int
from esae.runtime import matmul_dtype

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


def _unit(v: Tensor, dtype: torch.dtype, block_size: int) -> tuple[Tensor, Tensor]:
    """``(v / ‖v‖ in dtype, ‖v‖)`` for the rows of ``v`` (F, D), a block at a time (no full-size
    float32 copy: 65k × 4609 floats are 1.2 GiB); zero rows stay zero."""
    norm = v.norm(dim=1)
    out = torch.empty(v.shape, dtype=dtype, device=v.device)
    for s in range(0, v.shape[0], block_size):
        out[s:s + block_size] = v[s:s + block_size] / norm[s:s + block_size, None].clamp_min(1e-30)
    return out, norm


@torch.no_grad()
def _top_cosines(an: Tensor, bn: Tensor, k: int, block_size: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """For unit rows ``an``, ``bn`` (F, D): each row's ``k`` columns of highest cosine and each
    column's ``k`` best rows, ``(row_idx, row_val, col_idx, col_val)`` (F, k) each, from one
    blockwise pass of products in the rows' dtype."""
    F = an.shape[0]
    row_idx = torch.empty((F, k), dtype=torch.long, device=an.device)
    row_val = torch.empty((F, k), device=an.device)
    col_val = torch.full((F, k), -float("inf"), device=an.device)
    col_idx = torch.zeros((F, k), dtype=torch.long, device=an.device)
    for start in range(0, F, block_size):
        c = torch.mm(an[start:start + block_size], bn.T).float()  # (block, F) cosines
        n = c.shape[0]
        row_val[start:start + n], row_idx[start:start + n] = c.topk(k, dim=1)
        # for every column, its best rows in this block, merged with the best so far
        v, i = c.T.topk(min(k, n), dim=1)
        merged_v, merged_i = torch.cat([col_val, v], dim=1), torch.cat([col_idx, i + start], dim=1)
        top = merged_v.topk(k, dim=1).indices
        col_val, col_idx = merged_v.gather(1, top), merged_i.gather(1, top)
    return row_idx, row_val, col_idx, col_val


@torch.no_grad()
def _rescore(an: Tensor, bn: Tensor, idx: Tensor, k: int, chunk: int = 512) -> tuple[Tensor, Tensor]:
    """Each row ``i`` of ``an`` (F, D) against its candidates ``bn[idx[i]]`` (idx (F, k')):
    the ``k`` of highest cosine, ``(indices (F, k), cosines (F, k))`` (products in the rows'
    dtype, as in the full pass)."""
    out_i = torch.empty((idx.shape[0], k), dtype=torch.long, device=an.device)
    out_v = torch.empty((idx.shape[0], k), device=an.device)
    for s in range(0, idx.shape[0], chunk):
        cand = idx[s:s + chunk]
        cos = torch.bmm(bn[cand], an[s:s + chunk, :, None]).squeeze(-1).float()  # (chunk, k')
        v, j = cos.topk(k, dim=1)
        out_v[s:s + chunk], out_i[s:s + chunk] = v, cand.gather(1, j)
    return out_i, out_v


@torch.no_grad()
def knn_candidates(a: Tensor, b: Tensor, k: int, block_size: int = 2048, dtype: torch.dtype | None = None,
                   sketch: slice | None = None, overfetch: int = 4) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candidate edges ``(rows, cols, products)`` (sorted by row, deduplicated): for each row
    ``i`` of ``a`` (F, D) the ``k`` rows of ``b`` (F, D) of highest cosine similarity, and for
    each row ``j`` of ``b`` its ``k`` best rows of ``a``; ``products`` holds each edge's
    ``a_i · b_j`` (float64). One blockwise pass of products of the normalised vectors in
    ``dtype`` yields both the candidates and their products (cosine × norms), so no
    (edges × D) gather is needed; bfloat16 halves the time on CPUs with bf16 units at a
    relative error of about 1e-3 per product (the benchmark measures what that costs in
    objective), but is 200× slower than float32 on CPUs without them, so ``dtype=None`` takes
    :func:`esae.runtime.matmul_dtype` ``"auto"`` (bfloat16 where native, float32 elsewhere).
    A zero vector is a candidate of every row of the other side (product 0).

    With ``sketch`` (a slice of the D coordinates, e.g. the part of the parameter vector that
    holds most of its squared norm) the pass runs on those coordinates only, keeping
    ``overfetch × k`` candidates per row and per column, and the cosines of the full vectors
    on those candidate edges (float32 products of the ``dtype`` unit vectors) choose the ``k``
    kept: the pass's cost falls with the sketch's width, the answer changes only where a full-vector
    top-``k`` partner falls outside the sketch's top ``overfetch × k``."""
    _check_vectors(a, b)
    F = a.shape[0]
    check_int("k", k, 1, F)
    check_int("block_size", block_size, 1)
    check_int("overfetch", overfetch, 1)
    dtype = matmul_dtype("auto", a.device) if dtype is None else dtype
    if sketch is None:
        (an, norm_a), (bn, norm_b) = _unit(a, dtype, block_size), _unit(b, dtype, block_size)
        row_idx, row_val, col_idx, col_val = _top_cosines(an, bn, k, block_size)
    else:
        if not isinstance(sketch, slice) or not 0 < len(range(a.shape[1])[sketch]) <= a.shape[1]:
            raise ValueError(f"sketch must be a non-empty slice of the {a.shape[1]} coordinates, got {sketch!r}")
        wide = min(F, overfetch * k)
        (sa, _), (sb, _) = _unit(a[:, sketch], dtype, block_size), _unit(b[:, sketch], dtype, block_size)
        row_wide, _, col_wide, _ = _top_cosines(sa, sb, wide, block_size)
        del sa, sb
        (an, norm_a), (bn, norm_b) = _unit(a, dtype, block_size), _unit(b, dtype, block_size)
        row_idx, row_val = _rescore(an, bn, row_wide, k)
        col_idx, col_val = _rescore(bn, an, col_wide, k)
    rows = torch.arange(F, device=a.device)[:, None]
    keys = [(rows * F + row_idx).flatten(), (col_idx * F + rows).flatten()]
    cosines = [row_val.flatten(), col_val.flatten()]
    # a zero vector (a dead feature) has inner product 0 with every partner: all of them are
    # equally good for it, so it is joined to all of them (exact; a few dead features cost F edges each)
    everyone = torch.arange(F, device=a.device)
    for i in torch.nonzero(norm_a == 0).flatten():
        keys.append(i * F + everyone)
        cosines.append(torch.zeros(F, device=a.device))
    for j in torch.nonzero(norm_b == 0).flatten():
        keys.append(everyone * F + j)
        cosines.append(torch.zeros(F, device=a.device))
    key, first = np.unique(torch.cat(keys).cpu().numpy(), return_index=True)
    rows, cols = key // F, key % F
    na, nb = norm_a.double().cpu().numpy(), norm_b.double().cpu().numpy()
    return rows, cols, torch.cat(cosines).double().cpu().numpy()[first] * na[rows] * nb[cols]


def _fallback_edges(rows: np.ndarray, cols: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Edges that make a full matching possible: none if the candidate graph has one, else a
    maximum matching of the graph (Hopcroft–Karp) with the unmatched rows paired to the
    unmatched columns in order."""
    graph = csr_matrix((np.ones(len(rows), dtype=np.int8), (rows, cols)), shape=(n, n))
    partner = maximum_bipartite_matching(graph, perm_type="column")  # partner[i]: column of row i, or -1
    free_rows = np.flatnonzero(partner < 0)
    if len(free_rows) == 0:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    taken = np.zeros(n, dtype=bool)
    taken[partner[partner >= 0]] = True
    partner = partner.astype(np.int64)
    partner[free_rows] = np.flatnonzero(~taken)
    return free_rows, partner[free_rows]


@torch.no_grad()
def sparse_assignment(a: Tensor, b: Tensor, k: int = 8, block_size: int = 2048,
                      dtype: torch.dtype | None = None, sketch: slice | None = None,
                      overfetch: int = 4) -> np.ndarray:
    """The permutation ``π`` (F,) int64 minimising ``Σ_i ‖a_i − b_π(i)‖²`` over the candidate
    edges of :func:`knn_candidates` (plus fallback edges where the candidates admit no full
    matching), solved exactly on that sparse graph by SciPy's
    ``min_weight_full_bipartite_matching`` on the products of the candidate pass (``dtype``).
    Equal to :func:`exact_assignment`'s optimum when the optimal pairs are candidates (and,
    with ``dtype`` bfloat16, no two assignments are within the products' rounding). ``sketch``
    and ``overfetch`` as in :func:`knn_candidates`."""
    _check_vectors(a, b)
    F = a.shape[0]
    k = min(k, F)
    rows, cols, w = knn_candidates(a, b, k, block_size, dtype, sketch, overfetch)
    extra_rows, extra_cols = _fallback_edges(rows, cols, F)
    rows, cols = np.concatenate([rows, extra_rows]), np.concatenate([cols, extra_cols])
    w = np.concatenate([w, _edge_inner_products(a, b, extra_rows, extra_cols)])
    # every full matching has F edges, so a constant shift keeps the optimum; it makes every
    # weight strictly positive (a sparse matrix cannot store an edge of weight 0)
    weights = w.max() - w + 1.0
    graph = csr_matrix((weights, (rows, cols)), shape=(F, F))
    _, perm = min_weight_full_bipartite_matching(graph)
    return perm.astype(np.int64)


@torch.no_grad()
def _edge_inner_products(a: Tensor, b: Tensor, rows: np.ndarray, cols: np.ndarray,
                         chunk: int = 1 << 13) -> np.ndarray:
    """``a_rows[e] · b_cols[e]`` for every edge (float32 products, float64 result: they only
    rank edges; :func:`total_cost` and ``match`` recompute costs in float64)."""
    out = np.empty(len(rows), dtype=np.float64)
    af, bf = a.float(), b.float()
    for s in range(0, len(rows), chunk):
        r = torch.as_tensor(rows[s:s + chunk], device=a.device)
        c = torch.as_tensor(cols[s:s + chunk], device=b.device)
        out[s:s + chunk] = torch.einsum("ed,ed->e", af[r], bf[c]).double().cpu().numpy()
    return out


def assign(a: Tensor, b: Tensor, solver: str = "exact", k: int = 8, block_size: int = 2048,
           sketch: slice | None = None) -> np.ndarray:
    """:func:`exact_assignment` or :func:`sparse_assignment` (with ``sketch``) by ``solver`` name."""
    check_choice("solver", solver, SOLVERS)
    if solver == "exact":
        return exact_assignment(a, b, block_size)
    return sparse_assignment(a, b, k, block_size, sketch=sketch)


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
