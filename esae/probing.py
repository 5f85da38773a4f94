"""Sparse probing of SAE latents and reconstructions on binary tasks (chapter 6).

The protocol of the equivariant-SAE paper (section 4 "Probing Tasks", appendix C.1), generic
over arrays so it applies to any SAE, model or task set:

1. **Truncation** — for each task keep the ``L`` input dimensions (SAE latents, or neurons of the
   base activations) with the largest absolute difference between the two classes' mean values,
   computed on the *training split only* (:func:`top_latents`; the recipe of Kantamneni et al.,
   "Are Sparse Autoencoders Useful? A Case Study in Sparse Probing").
2. **Inputs** — either those ``L`` values themselves, or the *truncated reconstruction*: the
   SAE's (affine) decoder applied to only those ``L`` latents, a ``d``-dimensional vector
   (pass ``decoder=(W_dec, b_dec)``; :func:`affine_decoder` extracts it from any ``decode``).
3. **Probes** — kNN (16 neighbours, Euclidean), L2-regularised logistic regression and XGBoost
   (100 trees, depth 6, learning rate 0.3, L2 regularisation, histogram method), fitted on the
   training split and scored by **F1 on the test split** (:data:`PROBES`, :class:`ProbeConfig`).
4. **Summary** — the best probe per task, averaged over the task groups S, SO, SP, SPO and all
   (:func:`group_means`, :func:`summarize`).

A task where one class is empty in either split has no meaningful F1; it is reported in
``ProbeScores.degenerate`` (with the reason) and left out of the averages, never crashed on.

The protocol applied to the paper's own SAEs — the panels of Figures 3 and 7, each SAE's probe
inputs, the fair readings of RESULT 2 and its claims as stated — is :mod:`esae.sae_probing`.

Speed: the thousands of probe fits run in parallel over tasks (joblib, one BLAS/XGBoost thread
per worker), only the ``(n, L)`` truncated slice of each task travels to a worker, and each
``(input, L, probe)`` result can be kept in a store under a fingerprint of the arrays (the book's
pipeline passes ``esae.cache``: :func:`esae.pipeline.probe_scores`), so a re-run costs one hash of
the inputs.
"""

from __future__ import annotations

import hashlib
import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from esae.checks import check_choice, check_float, check_int
from esae.runtime import Store, progress

PROBES = ("knn", "logreg", "xgboost")
GROUPS = ("S", "SO", "SP", "SPO")
GROUP_KEYS = (*GROUPS, "all")
CACHE_KIND = "probe_scores"
CACHE_VERSION = 1  # bump when the fitting or scoring code changes


@dataclass(frozen=True)
class ProbeConfig:
    """Hyperparameters of the three probes (appendix C.1 of the paper).

    The paper trains its logistic regression with "learning rate 1e-3 and L2 strength 1e-4",
    i.e. a per-sample penalty ``λ/2 ‖w‖²`` added to the *mean* log-loss; scikit-learn's ``C``
    multiplies the *summed* loss, so ``C = 1 / (λ n_train)``. Features are standardised first
    (on the training split) so the exact solver converges on raw SAE latents. ``xgb_max_bin`` is
    XGBoost's default (256); fewer bins make the histogram method faster (``benchmarks/``).
    """

    knn_neighbors: int = 16  # neighbours of the kNN probe (Euclidean distance)
    logreg_l2: float = 1e-4  # L2 strength λ per sample of the logistic-regression probe
    logreg_max_iter: int = 200  # iteration cap of the logistic-regression solver
    xgb_estimators: int = 100  # boosted trees
    xgb_max_depth: int = 6  # depth of each tree
    xgb_learning_rate: float = 0.3  # shrinkage
    xgb_l2: float = 1.0  # XGBoost's L2 regularisation of leaf weights (reg_lambda)
    xgb_max_bin: int = 256  # histogram bins per feature
    xgb_tree_method: str = "hist"  # hist (the protocol), approx or exact (for comparisons)
    seed: int = 0  # seed handed to the probes (XGBoost)

    def __post_init__(self) -> None:
        check_int("knn_neighbors", self.knn_neighbors, 1)
        check_float("logreg_l2", self.logreg_l2, 0, lo_open=True)
        check_int("logreg_max_iter", self.logreg_max_iter, 1)
        check_int("xgb_estimators", self.xgb_estimators, 1)
        check_int("xgb_max_depth", self.xgb_max_depth, 1, 32)
        check_float("xgb_learning_rate", self.xgb_learning_rate, 0, 1, lo_open=True)
        check_float("xgb_l2", self.xgb_l2, 0)
        check_int("xgb_max_bin", self.xgb_max_bin, 2)
        check_choice("xgb_tree_method", self.xgb_tree_method, ("hist", "approx", "exact"))
        check_int("seed", self.seed, 0)

    def for_probe(self, probe: str) -> dict:
        """The fields that affect ``probe`` (so changing one probe's settings keeps the others cached)."""
        check_choice("probe", probe, PROBES)
        prefix = {"knn": "knn_", "logreg": "logreg_", "xgboost": "xgb_"}[probe]
        out = {k: v for k, v in asdict(self).items() if k.startswith(prefix)}
        if probe == "xgboost":
            out["seed"] = self.seed
        return out


def check_probes(probes: Sequence[str]) -> tuple[str, ...]:
    """Fail unless ``probes`` is a non-empty list of distinct names from :data:`PROBES`."""
    if isinstance(probes, str) or not isinstance(probes, Sequence) or len(probes) == 0:
        raise ValueError(f"probes must be a non-empty list drawn from {', '.join(PROBES)}, got {probes!r}")
    for p in probes:
        check_choice("each entry of probes", p, PROBES)
    if len(set(probes)) != len(probes):
        raise ValueError(f"probes must not repeat a probe, got {list(probes)}")
    return tuple(probes)


# ----------------------------------------------------------------------------- truncation

def _as_numpy(x, name: str, ndim: int) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    if x.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} axes, got shape {x.shape}")
    return x


def _as_labels(y, name: str, n: int) -> np.ndarray:
    y = _as_numpy(y, name, 2)
    if y.shape[0] != n:
        raise ValueError(f"{name} must have {n} rows (one per sample), got shape {y.shape}")
    if y.dtype != bool:
        if not np.isin(y, (0, 1)).all():
            raise ValueError(f"{name} must be boolean (or 0/1), got values outside {{0, 1}}")
        y = y.astype(bool)
    return y


def class_mean_gap(x, labels) -> np.ndarray:
    """``|mean(x | y=1) − mean(x | y=0)|`` per task and input dimension.

    ``x`` ``(n, F)``, ``labels`` ``(n, T)`` bool → ``(T, F)`` float64. A class with no samples
    has mean 0 (its task is degenerate anyway).
    """
    x = _as_numpy(x, "x", 2)
    y = _as_labels(labels, "labels", x.shape[0])
    xf = x.astype(np.float64, copy=False)
    yf = y.astype(np.float64)
    n_pos = yf.sum(0)[:, None]
    n_neg = x.shape[0] - n_pos
    sum_pos = yf.T @ xf                      # (T, F)
    sum_all = xf.sum(0, keepdims=True)       # (1, F)
    mean_pos = sum_pos / np.maximum(n_pos, 1)
    mean_neg = (sum_all - sum_pos) / np.maximum(n_neg, 1)
    return np.abs(mean_pos - mean_neg)


def top_latents(x_train, labels_train, L: int) -> np.ndarray:
    """Per task, the ``L`` input dimensions with the largest class-mean gap on the training split.

    ``x_train`` ``(n, F)``, ``labels_train`` ``(n, T)`` bool → indices ``(T, L)`` int64, ordered
    by decreasing gap; ties go to the lower index (a stable sort), so the choice is deterministic.
    """
    x = _as_numpy(x_train, "x_train", 2)
    check_int("L", L, 1, x.shape[1])
    gap = class_mean_gap(x, labels_train)
    return np.argsort(-gap, axis=1, kind="stable")[:, :L]


# ----------------------------------------------------------------------------- decoders

def affine_decoder(decode: Callable[[torch.Tensor], torch.Tensor], n_latents: int, *,
                   device: torch.device | str | None = None, batch_size: int = 1024,
                   atol: float = 1e-4) -> tuple[np.ndarray, np.ndarray]:
    """Read an affine decoder ``decode(z) = z W + b`` off its outputs: ``(W (F, d), b (d,))``.

    ``b = decode(0)`` and row ``i`` of ``W`` is ``decode(e_i) − b``, so whatever ``decode`` folds in
    (a decoder bias, a scaling factor, ``M^p`` applied afterwards) is captured exactly. Checks the
    result on random sparse codes and raises ``ValueError`` if ``decode`` is not affine.
    """
    check_int("n_latents", n_latents, 1)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        zero = torch.zeros(1, n_latents, device=device)
        b = decode(zero).reshape(1, -1).double().cpu()
        rows = []
        for start in range(0, n_latents, batch_size):
            stop = min(start + batch_size, n_latents)
            eye = torch.zeros(stop - start, n_latents, device=device)
            eye[torch.arange(stop - start), torch.arange(start, stop)] = 1.0
            rows.append(decode(eye).reshape(stop - start, -1).double().cpu() - b)
        W = torch.cat(rows)
        z = torch.rand(16, n_latents, generator=gen) * (torch.rand(16, n_latents, generator=gen) < 0.05)
        direct = decode(z.to(device)).reshape(16, -1).double().cpu()
    via = z.double() @ W + b
    err = float((direct - via).abs().max())
    scale = float(direct.abs().max()) or 1.0
    if err > atol * max(scale, 1.0):
        raise ValueError(f"decode must be affine (z W + b) to form truncated reconstructions; "
                         f"max deviation {err:.3g} on random codes")
    return W.float().numpy(), b[0].float().numpy()


def _stacked(decoder, n_latents: int) -> tuple[np.ndarray, np.ndarray]:
    """``(W, b)`` as a stack of ``G`` affine maps: ``W`` ``(G, F, d)``, ``b`` ``(G, d)`` float32."""
    W, b = (np.asarray(a, dtype=np.float32) for a in decoder)
    if W.ndim == 2 and b.ndim == 1:
        W, b = W[None], b[None]
    if W.ndim != 3 or W.shape[1] != n_latents or b.shape != (W.shape[0], W.shape[2]):
        raise ValueError(f"decoder must be (W (F, d), b (d,)) or a stack (W (G, F, d), b (G, d)) with F = {n_latents}, "
                         f"got W {W.shape} and b {b.shape}")
    return W, b


def _rows(rows, n: int, n_maps: int, name: str) -> np.ndarray:
    if rows is None:
        if n_maps != 1:
            raise ValueError(f"{name} must say which of the {n_maps} decoder maps each row uses")
        return np.zeros(n, dtype=np.int64)
    r = np.asarray(rows).astype(np.int64)
    if r.shape != (n,) or r.min(initial=0) < 0 or r.max(initial=0) >= n_maps:
        raise ValueError(f"{name} must be ({n},) ints in 0..{n_maps - 1}, got shape {r.shape}")
    return r


def _reconstruct(x: np.ndarray, W: np.ndarray, b: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Row ``i`` of ``x`` ``(n, L)`` through map ``rows[i]``: ``x_i W[rows_i] + b[rows_i]``;
    ``W`` ``(G, L, d)``, ``b`` ``(G, d)`` → ``(n, d)``."""
    if W.shape[0] == 1:
        return x @ W[0] + b[0]
    out = np.empty((x.shape[0], W.shape[2]), dtype=np.float32)
    for q in np.unique(rows):
        sel = rows == q
        out[sel] = x[sel] @ W[q] + b[q]
    return out


def truncated_reconstruction(z, indices, decoder, rows=None) -> np.ndarray:
    """The decoder applied to only the latents ``indices`` (all others zeroed):
    ``z[:, indices] @ W[indices] + b``. ``z`` ``(n, F)``, ``indices`` ``(L,)`` → ``(n, d)`` float32.

    ``decoder`` is ``(W (F, d), b (d,))``, or a stack ``(W (G, F, d), b (G, d))`` of maps with
    ``rows`` ``(n,)`` saying which map each row goes through (e.g. ``M^p D`` for a rotation ``p``
    per image)."""
    z = _as_numpy(z, "z", 2)
    W, b = _stacked(decoder, z.shape[1])
    idx = np.asarray(indices)
    return _reconstruct(z[:, idx].astype(np.float32), W[:, idx], b, _rows(rows, len(z), W.shape[0], "rows"))


# ----------------------------------------------------------------------------- probes and F1

def f1(y_true, y_pred) -> float:
    """F1 of the positive class: ``2 TP / (2 TP + FP + FN)``; 0 when there is nothing to find
    and nothing was predicted (scikit-learn's ``zero_division=0``).

    The same float64 expression as ``sklearn.metrics.f1_score`` (``2 TP / (|true| + |predicted|)``,
    bit for bit; the tests compare them), counted directly: scikit-learn's input validation and
    confusion matrix took 5 ms a call, as long as a probe fit on truncated latents."""
    t = np.asarray(y_true).astype(bool, copy=False).ravel()
    p = np.asarray(y_pred).astype(bool, copy=False).ravel()
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred must have the same length, got {t.size} and {p.size}")
    denominator = float(np.count_nonzero(t)) + float(np.count_nonzero(p))
    return 2.0 * float(np.count_nonzero(t & p)) / denominator if denominator else 0.0


def always_yes_f1(labels) -> np.ndarray:
    """The F1 of a probe that answers "yes" for every image, per task of ``labels`` ``(n, T)`` bool:
    ``2p / (1 + p)`` with ``p`` the task's positive share (0 for a task without positives). A probe
    scoring below it on a task has learned less than its base rate: the floor to read F1 against."""
    y = _as_labels(labels, "labels", len(labels))
    p = y.mean(axis=0)
    return 2 * p / (1 + p)


def make_probe(probe: str, config: ProbeConfig, n_train: int):
    """An unfitted scikit-learn-style classifier for ``probe`` (one thread; parallelism is over tasks)."""
    check_choice("probe", probe, PROBES)
    if probe == "knn":
        from sklearn.neighbors import KNeighborsClassifier

        return KNeighborsClassifier(n_neighbors=min(config.knn_neighbors, n_train), metric="euclidean",
                                    algorithm="brute", n_jobs=1)
    if probe == "logreg":
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        # newton-cholesky: exact and fast for the few hundred features probed here, including the
        # rank-deficient truncated reconstructions on which lbfgs crawls.
        return make_pipeline(StandardScaler(), LogisticRegression(
            C=1.0 / (config.logreg_l2 * n_train), solver="newton-cholesky", max_iter=config.logreg_max_iter))
    from xgboost import XGBClassifier

    return XGBClassifier(n_estimators=config.xgb_estimators, max_depth=config.xgb_max_depth,
                         learning_rate=config.xgb_learning_rate, reg_lambda=config.xgb_l2,
                         max_bin=config.xgb_max_bin, tree_method=config.xgb_tree_method, n_jobs=1,
                         random_state=config.seed, verbosity=0)


def _xgb_params(config: ProbeConfig, n_threads: int = 1) -> dict:
    """The booster parameters :func:`make_probe`'s ``XGBClassifier`` hands to ``xgboost.train``."""
    return {"objective": "binary:logistic", "max_depth": config.xgb_max_depth, "eta": config.xgb_learning_rate,
            "reg_lambda": config.xgb_l2, "max_bin": config.xgb_max_bin, "tree_method": config.xgb_tree_method,
            "nthread": n_threads, "seed": config.seed, "verbosity": 0}


def xgboost_predict(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, config: ProbeConfig,
                    n_threads: int = 1) -> np.ndarray:
    """The XGBoost probe through XGBoost's own API: fit on ``(x_train (n, f), y_train (n,) or (n, T))``
    and predict ``x_test`` ``(m, f)`` → bool ``(m,)`` (or ``(m, T)``), the same trees and predictions as
    :func:`make_probe`'s ``XGBClassifier`` (``benchmarks/bench_probing.py`` and the tests check it
    bit for bit) without the scikit-learn wrapper's per-fit work. The data go in as a plain
    ``DMatrix``, whose histogram cuts the booster computes once: the same cuts as the wrapper's
    ``QuantileDMatrix`` (every one of 1,152 chapter-6 fits gave the same predictions) in less time on
    the probes' small matrices (1.23–1.28× a fit). With a ``(n, T)`` label matrix the ``T`` tasks
    share one quantile sketch and are boosted together, one tree per task per round
    (``multi_strategy="one_output_per_tree"``) — for tasks that share their feature matrix."""
    import xgboost as xgb

    y = np.asarray(y_train).astype(np.float32)
    params = _xgb_params(config, n_threads)
    if y.ndim == 2:
        params["multi_strategy"] = "one_output_per_tree"
    data = xgb.DMatrix(x_train, label=y, nthread=n_threads)
    booster = xgb.train(params, data, num_boost_round=config.xgb_estimators)
    return np.asarray(booster.inplace_predict(x_test)) > 0.5


def degenerate_reason(y_train, y_test) -> str | None:
    """Why a task cannot be scored (a class empty in a split), or ``None`` if it can."""
    for split, y in (("train", y_train), ("test", y_test)):
        y = np.asarray(y, dtype=bool)
        if not y.any():
            return f"no positive examples in the {split} split"
        if y.all():
            return f"no negative examples in the {split} split"
    return None


def fit_and_score(probe: str, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray,
                  y_test: np.ndarray, config: ProbeConfig) -> float:
    """Fit ``probe`` on ``(x_train (n, f), y_train (n,))``; F1 of its predictions on the test split.
    XGBoost goes through its own API (:func:`xgboost_predict`: the same predictions as
    :func:`make_probe`'s wrapper, faster)."""
    if probe == "xgboost":
        return f1(y_test, xgboost_predict(x_train, y_train, x_test, config))
    model = make_probe(probe, config, len(x_train))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence chatter on degenerate features; F1 is what counts
        model.fit(x_train, y_train.astype(np.int64))
        pred = model.predict(x_test)
    return f1(y_test, pred)


def _fit_chunk(chunk: list[tuple], probes: tuple[str, ...], config: ProbeConfig) -> tuple[list[tuple[int, str, float]], float]:
    """Worker: fit every probe on each task of ``chunk``; return ``(task, probe, f1)`` triples and
    the CPU seconds the worker spent."""
    from threadpoolctl import threadpool_limits

    start = time.process_time()
    out = []
    with threadpool_limits(limits=1):
        for task, xtr, ytr, xte, yte, W, b, rows_tr, rows_te, extra_tr, extra_te in chunk:
            if W is not None:  # the truncated reconstruction, formed here to keep transfers (n, L)-sized
                xtr = _reconstruct(xtr, W, b, rows_tr)
                xte = _reconstruct(xte, W, b, rows_te)
            if extra_tr is not None:  # side information every task's probe gets (e.g. one-hot p)
                xtr = np.hstack([xtr, extra_tr])
                xte = np.hstack([xte, extra_te])
            for probe in probes:
                out.append((task, probe, fit_and_score(probe, xtr, ytr, xte, yte, config)))
    return out, time.process_time() - start


# ----------------------------------------------------------------------------- scores of one input

@dataclass
class ProbeScores:
    """F1 on the test split for each probe and task of one input at one truncation length.

    ``f1[probe]`` is ``(T,)`` float with NaN for degenerate tasks; ``degenerate`` maps each
    degenerate task's index to the reason; ``indices`` ``(T, L)`` are the truncated dimensions.
    """

    f1: dict[str, np.ndarray]
    degenerate: dict[int, str]
    indices: np.ndarray
    cached: dict[str, bool] = field(default_factory=dict)
    cpu_seconds: float = 0.0  # CPU time the probe fits took (0 when every probe came from the cache)
    groups: list[str] | None = None  # the task group of each column, when known
    tasks: np.ndarray | None = None  # which tasks of a larger list the columns are, when a subset

    @property
    def probes(self) -> tuple[str, ...]:
        return tuple(self.f1)

    def best(self) -> np.ndarray:
        """The best probe's F1 per task ``(T,)`` (NaN where degenerate)."""
        stacked = np.stack([self.f1[p] for p in self.probes])
        out = np.full(stacked.shape[1], np.nan)
        ok = ~np.isnan(stacked).all(0)
        out[ok] = np.nanmax(stacked[:, ok], axis=0)
        return out

    def best_probe(self) -> list[str | None]:
        """Which probe is best on each task (``None`` where degenerate)."""
        stacked = np.stack([self.f1[p] for p in self.probes])
        return [None if np.isnan(col).all() else self.probes[int(np.nanargmax(col))] for col in stacked.T]


def fingerprint(*arrays) -> str:
    """SHA-256 of arrays' shapes, dtypes and bytes (``None`` entries allowed): the cache identity
    of an input, so any change upstream (a retrained SAE, another split) gives a new key."""
    h = hashlib.sha256()
    for a in arrays:
        if a is None:
            h.update(b"none")
            continue
        a = np.ascontiguousarray(_as_numpy(a, "array", np.ndim(a)))
        h.update(f"{a.shape}{a.dtype.str}".encode())
        h.update(memoryview(a).cast("B"))
    return h.hexdigest()


def _n_workers(n_jobs: int) -> int:
    if n_jobs == -1:
        return os.cpu_count() or 1
    return n_jobs


def probe_scores(x_train, labels_train, x_test, labels_test, *, L: int,
                 probes: Sequence[str] = PROBES, config: ProbeConfig | None = None,
                 decoder: tuple[np.ndarray, np.ndarray] | None = None,
                 decoder_rows: tuple[np.ndarray, np.ndarray] | None = None,
                 extra: tuple[np.ndarray, np.ndarray] | None = None, n_jobs: int = 1,
                 store: Store | None = None, desc: str | None = None) -> ProbeScores:
    """Probe one input on every task: truncate to ``L`` dimensions, fit each probe, F1 on test.

    ``x_train`` ``(n_train, F)`` and ``x_test`` ``(n_test, F)`` are the probed values (SAE latents
    or base activations); ``labels_*`` ``(n, T)`` bool, one column per task. With ``decoder =
    (W (F, d), b (d,))`` the probes see the truncated reconstruction ``x[:, idx] W[idx] + b``
    ``(n, d)`` instead of ``x[:, idx]``; with a stack of maps ``(W (G, F, d), b (G, d))``,
    ``decoder_rows = (rows_train, rows_test)`` say which map each image goes through (the
    equivariant SAE's ``M^p D`` with each image's ``p``). ``extra = (e_train (n_train, e), e_test
    (n_test, e))`` are columns appended to every task's probe input after truncation and
    reconstruction, never truncated themselves (e.g. :func:`~esae.sae_probing.rotation_one_hot`: the rotation ``p``
    the equivariant SAE's decoder receives, handed to another SAE's probe for a fair comparison).
    Truncation uses the training split only. ``n_jobs``
    workers fit tasks in parallel (-1: every core). With a ``store`` (e.g. :mod:`esae.cache`), each
    probe's scores are kept under a fingerprint of the inputs, ``L`` and that probe's settings, and
    reused on a re-run.
    """
    config = config or ProbeConfig()
    probes = check_probes(probes)
    xtr = _as_numpy(x_train, "x_train", 2)
    xte = _as_numpy(x_test, "x_test", 2)
    if xtr.shape[1] != xte.shape[1]:
        raise ValueError(f"x_train and x_test must have the same number of columns, got {xtr.shape[1]} and {xte.shape[1]}")
    ytr = _as_labels(labels_train, "labels_train", xtr.shape[0])
    yte = _as_labels(labels_test, "labels_test", xte.shape[0])
    if ytr.shape[1] != yte.shape[1]:
        raise ValueError(f"labels_train and labels_test must have the same tasks, got {ytr.shape[1]} and {yte.shape[1]}")
    check_int("L", L, 1, xtr.shape[1])
    check_int("n_jobs", n_jobs, -1)
    if n_jobs == 0:
        raise ValueError("n_jobs must be a positive int or -1 (every core), got 0")
    rows = (None, None)
    if decoder is not None:
        decoder = _stacked(decoder, xtr.shape[1])
        given = decoder_rows or (None, None)
        rows = (_rows(given[0], len(xtr), decoder[0].shape[0], "decoder_rows[0]"),
                _rows(given[1], len(xte), decoder[0].shape[0], "decoder_rows[1]"))
    elif decoder_rows is not None:
        raise ValueError("decoder_rows needs a decoder")
    if extra is not None:
        if not isinstance(extra, (tuple, list)) or len(extra) != 2:
            raise ValueError(f"extra must be a pair (e_train (n_train, e), e_test (n_test, e)), got {type(extra).__name__}")
        extra = (_as_numpy(extra[0], "extra[0]", 2).astype(np.float32), _as_numpy(extra[1], "extra[1]", 2).astype(np.float32))
        if extra[0].shape[0] != len(xtr) or extra[1].shape[0] != len(xte) or extra[0].shape[1] != extra[1].shape[1]:
            raise ValueError(f"extra must be ({len(xtr)}, e) and ({len(xte)}, e) arrays with the same e, got "
                             f"{extra[0].shape} and {extra[1].shape}")

    n_tasks = ytr.shape[1]
    indices = top_latents(xtr, ytr, L)
    degenerate = {t: r for t in range(n_tasks) if (r := degenerate_reason(ytr[:, t], yte[:, t])) is not None}

    cpu = [0.0]

    def run(todo: tuple[str, ...]) -> dict[str, list]:
        fitted, seconds = _run_tasks(xtr, ytr, xte, yte, indices, degenerate, todo, config, decoder, rows,
                                     n_jobs, desc, extra)
        cpu[0] += seconds
        return {p: [fitted.get((t, p)) for t in range(n_tasks)] for p in todo}

    results: dict[str, list] = {}
    cached: dict[str, bool] = {}
    keys: dict[str, dict] = {}
    if store is not None:
        # without extra columns the identity is the one earlier versions stored (their caches stay valid)
        identity = fingerprint(xtr, ytr, xte, yte, *(decoder or (None, None)), *rows, *(extra or ()))
        for p in probes:
            keys[p] = {"version": CACHE_VERSION, "input": identity, "L": L, "probe": p,
                       "settings": config.for_probe(p)}
            if store.is_cached(CACHE_KIND, keys[p]):
                results[p] = store.cached_json(CACHE_KIND, keys[p], lambda p=p: {"f1": run((p,))[p]})["f1"]
                cached[p] = True
    todo = tuple(p for p in probes if p not in results)
    if todo:  # every missing probe in one pass over the tasks, so each task's slice is cut once
        fresh = run(todo)
        for p in todo:
            results[p] = (store.cached_json(CACHE_KIND, keys[p], lambda p=p: {"f1": fresh[p]})["f1"]
                          if store is not None else fresh[p])
            cached[p] = False

    f1s = {p: np.array([np.nan if v is None else v for v in results[p]], dtype=float) for p in probes}
    return ProbeScores(f1=f1s, degenerate=degenerate, indices=indices, cached=cached, cpu_seconds=cpu[0])


def _run_tasks(xtr, ytr, xte, yte, indices, degenerate, probes, config, decoder, rows, n_jobs, desc, extra=None):
    from joblib import Parallel, delayed

    tasks = [t for t in range(ytr.shape[1]) if t not in degenerate]
    items = []
    for t in tasks:
        idx = indices[t]
        W = b = None
        if decoder is not None:
            W, b = np.ascontiguousarray(decoder[0][:, idx]), decoder[1]
        items.append((t, np.ascontiguousarray(xtr[:, idx], dtype=np.float32), ytr[:, t],
                      np.ascontiguousarray(xte[:, idx], dtype=np.float32), yte[:, t], W, b, *rows,
                      *(extra or (None, None))))
    workers = _n_workers(n_jobs)
    n_chunks = min(len(items), max(1, 4 * workers))
    chunks = [items[i::n_chunks] for i in range(n_chunks)] if items else []
    bar = progress(total=len(items), desc=desc or "probing", unit="task")
    fitted: dict[tuple[int, str], float] = {}
    cpu = 0.0
    try:
        if workers == 1:
            outputs = (_fit_chunk(c, probes, config) for c in chunks)
        else:
            outputs = Parallel(n_jobs=workers, backend="loky", return_as="generator_unordered")(
                delayed(_fit_chunk)(c, probes, config) for c in chunks)
        for out, seconds in outputs:
            for task, probe, score in out:
                fitted[(task, probe)] = score
            cpu += seconds
            bar.update(len(out) // len(probes))
    finally:
        bar.close()
    return fitted, cpu


# ----------------------------------------------------------------------------- summaries

def group_means(scores, groups: Sequence[str]) -> dict[str, float | None]:
    """Mean F1 per task group and over all tasks, skipping degenerate (NaN) tasks.

    ``scores`` ``(T,)``; ``groups`` ``(T,)`` names from :data:`GROUPS`. A group with no scorable
    task gets ``None`` (plain JSON, no NaN). Keys: ``S, SO, SP, SPO, all``.
    """
    s = np.asarray(scores, dtype=float)
    g = np.asarray(list(groups))
    if s.ndim != 1 or g.shape != s.shape:
        raise ValueError(f"scores and groups must be (T,) of equal length, got {s.shape} and {g.shape}")
    for name in set(g.tolist()):
        check_choice("each task group", name, GROUPS)

    def mean(mask: np.ndarray) -> float | None:
        vals = s[mask & ~np.isnan(s)]
        return float(vals.mean()) if vals.size else None

    out = {name: mean(g == name) for name in GROUPS}
    out["all"] = mean(np.ones_like(s, dtype=bool))
    return out


def summarize(scores: ProbeScores, groups: Sequence[str] | None = None) -> dict[str, dict[str, float | None]]:
    """Group means for the best probe per task (``"best"``) and for each probe alone
    (``groups`` defaults to ``scores.groups``)."""
    groups = scores.groups if groups is None else groups
    if groups is None:
        raise ValueError("groups must be given when scores.groups is not set")
    out = {"best": group_means(scores.best(), groups)}
    for p in scores.probes:
        out[p] = group_means(scores.f1[p], groups)
    return out


def result_key(model: str, input_kind: str, L: int, sae: str | None = None, k: int | None = None) -> str:
    """The key of one probed input in ``results/<profile>/06_probing.json``:
    ``"<model>/<input>/<sae>/k<K>/L<L>"`` for SAE inputs, ``"<model>/activations/L<L>"`` for the base."""
    check_choice("input_kind", input_kind, ("latents", "reconstructions", "activations"))
    if input_kind == "activations":
        return f"{model}/activations/L{L}"
    if sae is None or k is None:
        raise ValueError(f"sae and k are required for input_kind={input_kind!r}")
    return f"{model}/{input_kind}/{sae}/k{k}/L{L}"


def select_tasks(groups: Sequence[str], per_group: int) -> np.ndarray:
    """Indices of ``per_group`` tasks of each group, evenly spread over the group's tasks in their
    order (all of a smaller group); ``per_group = 0`` selects every task. For cheaper runs."""
    check_int("per_group", per_group, 0)
    g = np.asarray(list(groups))
    if per_group == 0:
        return np.arange(len(g))
    keep = []
    for name in dict.fromkeys(g.tolist()):
        idx = np.flatnonzero(g == name)
        take = min(per_group, len(idx))
        keep.extend(idx[np.round(np.linspace(0, len(idx) - 1, take)).astype(int)].tolist())
    return np.array(sorted(keep))


def subset_group_means(scores: ProbeScores, probe: str, tasks: np.ndarray, groups: Sequence[str]) -> dict | None:
    """Group means of ``probe``'s F1 over the tasks ``tasks`` (indices into the full task list with
    groups ``groups``), from ``scores`` whose columns are ``scores.tasks`` (all tasks when ``None``);
    ``None`` if ``scores`` lacks one of those tasks."""
    cols = np.arange(len(scores.f1[probe])) if scores.tasks is None else np.asarray(scores.tasks)
    where = {int(t): i for i, t in enumerate(cols)}
    if any(int(t) not in where for t in tasks):
        return None
    values = scores.f1[probe][[where[int(t)] for t in tasks]]
    return group_means(values, [groups[int(t)] for t in tasks])
