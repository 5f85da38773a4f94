"""Run-time plumbing shared by every chapter: device choice, seeding, progress bars, paths, and
the CPU thread policy that keeps a chapter fast on a machine that is busy with other work.

**A busy machine.** torch's CPU kernels run on GNU OpenMP threads (one per core). At a barrier,
libgomp's default wait policy *spins* before it sleeps; on a 2-core machine with another busy
process, a spinning thread takes the core its partner needs to finish, so every parallel region
waits a scheduler time slice — thousands of small steps (SAE steps at batch 64, the M fits'
small matrices) turn a fair 2× slowdown into 4–10×. ``OMP_WAIT_POLICY=PASSIVE`` makes waiting
threads sleep at once, but then every parallel region pays a wake-up, and on an idle machine the
same small steps ran up to 1.7× slower (fitting M: 17 s against 10 s). So this module bounds the
spin instead: ``GOMP_SPINCOUNT=1000`` (a few microseconds of spinning, enough to catch the next
region of a step loop, then sleep), with ``OMP_WAIT_POLICY=PASSIVE`` for OpenMP runtimes other
than libgomp (libgomp lets ``GOMP_SPINCOUNT`` decide). A user's own ``OMP_WAIT_POLICY`` or
``GOMP_SPINCOUNT`` is left as it is. libgomp reads them once, when torch loads it, so this
module sets them *before* importing torch, and ``esae`` imports this module first; chapters
executed by :mod:`esae.book` inherit them through the environment of their kernels. Set
``ESAE_CPU_POLICY=off`` to leave OpenMP alone (``benchmarks/bench_busy.py`` does, to measure the
old behaviour). See ``benchmarks/README.md`` for the measurements.
"""

from __future__ import annotations

import os
import sys

# Before torch (and its libgomp) load; see the module docstring. Set for child processes (the
# book's kernels) even when this process loaded torch first; remember what this process got.
SPIN_COUNT = 1000  # libgomp's spins before a waiting thread sleeps (its default: 300,000)
_MAX_FAIR_SPIN = 10_000  # at most this many spins count as "sleeps soon" (check_cpu_policy)


def _policy() -> tuple[str | None, str | None]:
    return os.environ.get("OMP_WAIT_POLICY"), os.environ.get("GOMP_SPINCOUNT")


_POLICY_AT_LOAD = _policy() if "torch" in sys.modules else None
if os.environ.get("ESAE_CPU_POLICY", "on") != "off":
    if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
        os.environ["GOMP_SPINCOUNT"] = str(SPIN_COUNT)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
if "torch" not in sys.modules:
    _POLICY_AT_LOAD = _policy()

import functools  # noqa: E402
import random  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Callable, Iterable, Iterator  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Protocol, TypeVar  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

T = TypeVar("T")

# Libraries that import tqdm.auto (sae-lens, transformers) warn once that ipywidgets is missing;
# the bars fall back to text, which is all a page executed by papermill can show anyway.
warnings.filterwarnings("ignore", message="IProgress not found")

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def passive_wait_policy() -> bool:
    """Whether this process's OpenMP threads sleep soon when idle (when torch loaded libgomp,
    ``GOMP_SPINCOUNT`` was at most 10,000, or unset with ``OMP_WAIT_POLICY=passive``) — what
    keeps a busy machine from slowing torch's CPU kernels by far more than the fair share (see
    the module docstring)."""
    policy, spins = _POLICY_AT_LOAD or (None, None)
    if spins is not None:
        try:
            return 0 <= int(spins) <= _MAX_FAIR_SPIN
        except ValueError:
            return False
    return (policy or "").lower() == "passive"


_WARNED = False


def check_cpu_policy() -> None:
    """Called when a chapter starts (:func:`resolve_device`) and by the stacked SAE trainer:
    warns once when torch's OpenMP threads spin on wait (torch imported before ``esae`` without
    ``OMP_WAIT_POLICY=PASSIVE``) on a machine with few cores, where any other busy process then
    slows every small step several-fold; the cure is to set the variable or import esae first."""
    global _WARNED
    if _WARNED or passive_wait_policy() or os.environ.get("ESAE_CPU_POLICY", "on") == "off":
        return
    if torch.get_num_threads() > 1 and (os.cpu_count() or 1) <= 4:
        _WARNED = True
        warnings.warn("torch was loaded with OpenMP threads that spin on wait (no OMP_WAIT_POLICY=PASSIVE or "
                      f"GOMP_SPINCOUNT <= {_MAX_FAIR_SPIN}): with another busy process on this "
                      f"{os.cpu_count()}-core machine, small steps can run several times slower than a fair share. "
                      f"Set GOMP_SPINCOUNT={SPIN_COUNT} before starting Python (or import esae before torch).",
                      RuntimeWarning, stacklevel=2)


def resolve_device(device: str = "auto") -> torch.device:
    """Turn a device parameter into a `torch.device`.

    ``"auto"`` picks CUDA when it is available and the CPU otherwise; ``"cuda"`` or
    ``"cuda:N"`` demands a GPU and fails clearly when there is none. Also checks the CPU thread
    policy (:func:`check_cpu_policy`), since every chapter starts here, and on a GPU sets the
    book's numerics there (:func:`cuda_numerics`: process-wide cuDNN flags).
    """
    check_cpu_policy()
    if not isinstance(device, str) or device.split(":")[0] not in DEVICE_CHOICES:
        raise ValueError(f"device must be one of {', '.join(DEVICE_CHOICES)} (or cuda:N), got {device!r}")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} was requested but CUDA is not available; use 'auto' or 'cpu'")
    resolved = torch.device(device)
    if resolved.type == "cuda":
        cuda_numerics()
    return resolved


def cuda_numerics() -> None:
    """The book's numerics on a GPU: cuDNN's float32 convolutions in full float32 (PyTorch lets
    them use TF32, 10-bit mantissas, by default on Ampere and later while its float32 matrix
    products stay exact, which would leave the CNN's numbers — chapter 3's ψ additive "up to float
    rounding", M's R² — at about 1e-3 relative precision instead of 1e-7), and cuDNN's
    deterministic convolution algorithms, so that one seed trains the same CNN on every run."""
    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is not None and hasattr(conv, "fp32_precision"):  # torch >= 2.9: the per-operator API
        conv.fp32_precision = "ieee"
    else:
        torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


MATMUL_DTYPES = ("auto", "float32", "bfloat16")
HEAD_DTYPES = (*MATMUL_DTYPES, "int8")  # chapter 7's vocabulary head (esae.lm_loss.head_dtype)


@functools.lru_cache(maxsize=None)
def _cpu_has_bf16() -> bool:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: assume no bf16 units (float32 is never the slow choice)
        return False
    for line in text.splitlines():
        key = line.split(":", 1)[0].strip()
        if key in ("flags", "Features"):  # x86 / Arm
            flags = set(line.split(":", 1)[1].split())
            return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})
    return False


def native_bfloat16(device: torch.device | str = "cpu") -> bool:
    """Whether bfloat16 matrix products run at hardware speed on ``device``: always on CUDA; on a
    CPU only with bf16 instructions (x86 AVX-512 BF16 or AMX, Arm's BF16 extension, read from
    ``/proc/cpuinfo``). Without them torch falls back to a scalar kernel: on a 2-core AVX2 AMD
    EPYC a (1024 × 2304) · (2304 × 1024) product ran at 0.5 GFLOP/s in bfloat16 against 110 in
    float32, 220× slower."""
    kind = torch.device(device).type
    return kind == "cuda" or (kind == "cpu" and _cpu_has_bf16())


def matmul_dtype(choice: str, device: torch.device | str = "cpu", name: str = "dtype") -> torch.dtype:
    """The dtype of large, precision-tolerant matrix products (chapter 7's vocabulary head, the
    sparse assignment's candidate pass): ``"float32"`` or ``"bfloat16"`` as named, ``"auto"``
    bfloat16 where it is native (:func:`native_bfloat16`) and float32 elsewhere. The choice
    depends only on the machine, so a profile gives the same numbers on the same machine.
    ``name`` is the parameter named in the error on a bad ``choice``."""
    if choice not in MATMUL_DTYPES:
        raise ValueError(f"{name} must be one of {', '.join(MATMUL_DTYPES)}, got {choice!r}")
    if choice == "auto":
        return torch.bfloat16 if native_bfloat16(device) else torch.float32
    return getattr(torch, choice)


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch (CPU and CUDA); return a CPU generator seeded alike."""
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def progress(iterable: Iterable[T] | None = None, **kwargs: Any) -> Any:
    """A tqdm progress bar: a widget in Jupyter when ipywidgets is installed, text otherwise.

    Set ``ESAE_PROGRESS=0`` to silence bars (the book build does, so executed pages stay clean).
    """
    kwargs.setdefault("disable", os.environ.get("ESAE_PROGRESS", "1") == "0")
    kwargs.setdefault("mininterval", 1.0)
    try:
        import ipywidgets  # noqa: F401

        from tqdm.auto import tqdm
    except ImportError:
        from tqdm import tqdm
    return tqdm(iterable, **kwargs)


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Within the context torch's CPU kernels use ``n`` threads; the previous count after it."""
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n (torch CPU threads) must be a positive int, got {n!r}")
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def job_workers(jobs: int, n_calls: int, device: torch.device | str = "cpu") -> int:
    """How many worker processes :func:`run_jobs` uses for ``n_calls`` calls: ``jobs`` (0: one
    per CPU core), at most one per call; none (0: run in this process) on a GPU or for fewer
    than two calls or workers."""
    if not isinstance(jobs, int) or jobs < 0:
        raise ValueError(f"jobs must be 0 (one worker per CPU core) or a positive int, got {jobs!r}")
    if torch.device(device).type != "cpu":
        return 0
    workers = min(jobs or (os.cpu_count() or 1), n_calls)
    return workers if workers >= 2 else 0


_THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def _start_worker() -> None:
    # a spawned worker inherits the caller's environment (ESAE_CACHE, ESAE_RESULTS, ...) at spawn
    os.environ["ESAE_PROGRESS"] = "0"  # a worker's bars would interleave with the parent's
    torch.set_num_threads(1)


def run_jobs(calls: Iterable[Callable[[], Any]], workers: int, desc: str | None = None) -> None:
    """Run ``calls`` (picklable, no arguments; what they return is dropped: they fill a cache)
    in ``workers`` fresh processes, each single-threaded, with one progress bar here; with
    ``workers`` 0 or 1, one after another in this process. Each worker takes the next call when
    it finishes one; an exception in a call is raised here.

    Why processes: the book's training steps are small (batch 64–512 on 256-d activations), and
    a second OpenMP thread speeds such a step up far less than a second process training another
    model does (``benchmarks/bench_jobs.py``: on 2 cores, two single-threaded processes train up
    to 1.9× as many models per hour as one process with two threads, most at batch 64). The
    workers are spawned (not forked: a fork of a process whose OpenMP threads ran can hang) and
    live until the last call is done, so each pays the imports once (a few seconds). As with any
    spawned process, a script that calls this must guard its own work with
    ``if __name__ == "__main__":`` (the workers import the script's module)."""
    calls = list(calls)
    if workers <= 1:
        for call in progress(calls, desc=desc):
            call()
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    saved = {k: os.environ.get(k) for k in _THREAD_VARIABLES}
    os.environ.update({k: "1" for k in _THREAD_VARIABLES})  # inherited by the spawned workers only:
    try:  # this process's thread pools are already sized
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_start_worker) as pool:
            futures = [pool.submit(call) for call in calls]
            for future in progress(as_completed(futures), total=len(futures), desc=desc):
                future.result()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def repo_root() -> Path:
    """The repository root: ``ESAE_ROOT`` if set, else the nearest parent of the working
    directory holding ``_config.yml`` and ``pyproject.toml``, else the working directory."""
    env = os.environ.get("ESAE_ROOT")
    if env:
        return Path(env)
    here = Path.cwd().resolve()
    for candidate in (here, *here.parents):
        if (candidate / "_config.yml").is_file() and (candidate / "pyproject.toml").is_file():
            return candidate
    package_parent = Path(__file__).resolve().parent.parent
    if (package_parent / "_config.yml").is_file():
        return package_parent
    return here


def machine_description() -> dict[str, object]:
    """What a timing was measured on: CPU model and count, torch threads, GPU if any."""
    import platform

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "torch": torch.__version__, "platform": platform.platform(),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "gomp_spincount": os.environ.get("GOMP_SPINCOUNT")}


# --------------------------------------------------------------------------------------------
# where expensive results are kept


class Store(Protocol):
    """Where a function keeps what is expensive to recompute, keyed by ``(kind, config)``.

    The module :mod:`esae.cache` is one (the book's pipeline, :mod:`esae.pipeline`, passes it);
    a science function that takes ``store=None`` computes every time (:data:`NO_STORE`), so the
    science modules never know where, or whether, anything is kept."""

    def is_cached(self, kind: str, config: Any) -> bool: ...

    def cached_torch(self, kind: str, config: Any, compute: Callable[[], T]) -> T: ...

    def cached_json(self, kind: str, config: Any, compute: Callable[[], T]) -> T: ...

    def cached_dir(self, kind: str, config: Any, compute: Callable[[Path], None]) -> Path: ...


class _NoStore:
    """A :class:`Store` that keeps nothing: every call computes (folders go to a temporary
    directory removed when the process exits)."""

    def is_cached(self, kind: str, config: Any) -> bool:
        return False

    def cached_torch(self, kind: str, config: Any, compute: Callable[[], T]) -> T:
        return compute()

    cached_json = cached_torch

    def cached_dir(self, kind: str, config: Any, compute: Callable[[Path], None]) -> Path:
        import atexit
        import shutil
        import tempfile

        folder = Path(tempfile.mkdtemp(prefix=f"esae-{kind}-"))
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        compute(folder)
        return folder


NO_STORE: Store = _NoStore()


def store_or_none(store: Store | None) -> Store:
    """``store``, or :data:`NO_STORE` (compute every time) when ``None``."""
    return NO_STORE if store is None else store
