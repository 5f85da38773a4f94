"""A profile's cold wall time per chapter, extrapolated from two short cold runs of the chapters.

The ``paper`` profile's chapters 3–6 run for many hours on a 2-core CPU: too long to time end to
end in one sitting, yet a reader deciding whether to start them wants the number, and an
estimate from one kernel's step rate misses whatever else a chapter does. This script runs the
chapters themselves, **cold** (a fresh copy of the working tree with its own empty cache and
results), twice: with every *length knob* of a chapter at a small fraction ``f`` of the
profile's value, then at ``2f`` — the epochs of the base models (chapter 3), of the M fits (4)
and of the SAEs (5), and chapter 6's tasks per group (its panels, sweep, seeds, fair comparison
and other layout all probe those tasks; each probe is fitted at the profile's size, trees and
bins, so only the number of fits is scaled). Each chapter's time is read off the book runner's
``timings.json`` and extrapolated linearly to the full length::

    T(1) = T(r1) + (T(r2) − T(r1)) · (1 − r1) / (r2 − r1)

with ``r1``, ``r2`` the fractions the knobs actually took (integers, at least 1; for tasks, the
share of the full run's tasks). What this assumes, and where it errs: a chapter's time is a fixed
part plus a part proportional to its knobs. SAE epochs cost more once latents die (AuxK, capped at
``d_in // 2`` latents a sample, works on them: on chapter 5's activations at the paper's batch and
learning rate most latents are dead by the end of the second epoch, a step of epochs 3–4 costs about
1.6× one of the first), so samples of at least 2 and 4 epochs time that phase; and the
sampled tasks (evenly spread over each group) stand for the average task, so the figure is an
estimate from measured chapter times, not a measurement of the whole run; the two samples' times
are printed beside it.

Usage: ``python benchmarks/bench_profile_time.py [--profile paper] [--chapters 03 04 05 06]
[--fraction 03=0.02 05=0.004 ...] [--keep DIR] [--json FILE]`` (from the repository root; the
chapters before the first one named run too, cold, as upstream stages, and are timed).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from esae.book import chapters, resolve_chapter, resolved_parameters  # noqa: E402
from esae.params import PROFILES  # noqa: E402

#: the parameters that set how long a chapter trains (its length knobs)
KNOBS = {
    "03_base_models": ("mlp_epochs", "cnn_epochs"),
    "04_fitting_m": ("epochs", "paper_epochs", "constrained_epochs"),
    "05_equivariant_sae": ("n_epochs", "invariant_epochs"),
    "06_probing": ("figure3_tasks_per_group", "figure7_tasks_per_group", "sweep_tasks_per_group"),
}
TASK_KNOBS = {"figure3_tasks_per_group", "figure7_tasks_per_group", "sweep_tasks_per_group"}  # 0: all tasks
#: the first sample's fraction of each chapter's knobs (the second doubles it): about 2–3 epochs of
#: the paper profile's base models, M fits and SAEs; 1 task per group of chapter 6's (4 of 180)
FRACTIONS = {"03_base_models": 0.02, "04_fitting_m": 0.02, "05_equivariant_sae": 0.004, "06_probing": 0.01}
#: generated things a sample's tree does without (executed notebooks, built book, caches, results)
IGNORED = (".git", ".venv", ".cache", "results", "_build", "generated", "*.ipynb", "__pycache__", ".pytest_cache",
           "*.egg-info", ".ipynb_checkpoints")


@functools.cache
def task_groups() -> tuple[str, ...]:
    """The group of each of chapter 6's tasks."""
    from esae import shapes

    return tuple(t.group for t in shapes.probing_tasks())


def n_tasks(per_group: int) -> int:
    """Chapter 6's tasks at ``per_group`` tasks per group (0: all)."""
    from esae import probing

    return len(probing.select_tasks(task_groups(), per_group))


def amount(knob: str, value: int) -> int:
    """What a knob's value sets the length of: epochs, or chapter 6's number of tasks."""
    return n_tasks(value) if knob in TASK_KNOBS else value


def sample_values(full: dict[str, dict[str, int]], fractions: dict[str, float], multiple: int) -> dict[str, dict[str, int]]:
    """Each chapter's knobs at ``multiple`` × its fraction of the full values (integers ≥ 1; a
    tasks-per-group knob at 0, all tasks, counts from the largest group's size)."""
    def scaled(knob: str, v: int, f: float) -> int:
        reach = v or max(Counter(task_groups()).values())  # only a tasks knob can be 0 (all tasks)
        return max(1, round(reach * f * multiple))

    return {stem: {k: scaled(k, v, fractions[stem]) for k, v in knobs.items()} for stem, knobs in full.items()}


def realized(values: dict[str, int], full: dict[str, int]) -> float:
    """The mean fraction of the full lengths (epochs, tasks) that ``values`` set."""
    return sum(amount(k, values[k]) / amount(k, full[k]) for k in full) / len(full)


def extrapolate(t1: float, t2: float, r1: float, r2: float) -> float:
    """The time at fraction 1 of the line through (r1, t1) and (r2, t2)."""
    if r2 <= r1:
        raise ValueError(f"the second sample's fraction must exceed the first's, got {r1} and {r2}")
    return t1 + (t2 - t1) * (1.0 - r1) / (r2 - r1)


def make_root(work: Path, profile: str, values: dict[str, dict[str, int]], reuse: bool = False) -> Path:
    """A copy of the working tree (no cache, results, built book or venv) whose ``params/<profile>.yaml``
    sets the chapters' knobs to ``values``; with ``reuse``, an existing copy keeps its tree, cache
    and results and only gets the knobs."""
    if not (reuse and work.is_dir()):
        if work.exists():
            shutil.rmtree(work)
        shutil.copytree(ROOT, work, ignore=shutil.ignore_patterns(*IGNORED))
    path = work / "params" / f"{profile}.yaml"
    data = yaml.safe_load(path.read_text())
    for stem, knobs in values.items():
        data.setdefault(stem, {}).update(knobs)
    path.write_text(f"# {profile} with the length knobs of benchmarks/bench_profile_time.py\n"
                    + yaml.safe_dump(data, sort_keys=False))
    return work


def run_chapters(root: Path, profile: str, stems: list[str], force: bool = True) -> tuple[dict[str, float], float]:
    """Execute ``stems`` in ``root`` (its own cache and results; without ``force`` the chapters
    unchanged since their last run there are kept); each chapter's seconds (its last execution's)
    and the whole command's wall time."""
    env = dict(os.environ, ESAE_ROOT=str(root), ESAE_CACHE=str(root / ".cache" / "esae"),
               ESAE_RESULTS=str(root / "results"), MPLBACKEND="Agg",
               # the tree's own package first; a caller's PYTHONPATH (packages installed beside it) kept after
               PYTHONPATH=os.pathsep.join(filter(None, (str(root), os.environ.get("PYTHONPATH")))))
    cmd = [sys.executable, "-m", "esae.book", "run", *stems, "--profile", profile] + ["--force"] * force
    start = time.perf_counter()
    with open(root / "run.log", "w") as log:
        proc = subprocess.run(cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"the chapters failed in {root} (exit {proc.returncode}); see {root / 'run.log'}")
    timings = json.loads((root / "results" / profile / "timings.json").read_text())["chapters"]
    return {s: float(timings[s]) for s in stems}, wall


def load() -> str:
    """The load averages (1, 5, 15 min), to show how idle the machine was."""
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="paper", choices=PROFILES)
    parser.add_argument("--chapters", nargs="+", default=["03", "04", "05", "06"],
                        help="chapters to estimate (those before the first run too, as upstream stages)")
    parser.add_argument("--fraction", nargs="*", default=[], metavar="CHAPTER=F",
                        help="the first sample's fraction of a chapter's knobs, e.g. 05=0.004")
    parser.add_argument("--keep", type=Path, help="keep the two samples' trees under this folder")
    parser.add_argument("--reuse", action="store_true",
                        help="with --keep: reuse the samples' trees of an earlier run there; chapters whose knobs "
                             "and code are unchanged keep their times (e.g. add chapter 6 to a run of 3-5)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    if args.reuse and args.keep is None:
        raise SystemExit("--reuse needs --keep DIR (the folder of an earlier run's samples)")

    try:
        wanted = [resolve_chapter(c) for c in args.chapters]
    except ValueError as err:
        raise SystemExit(f"--chapters: {err}") from None
    every = chapters()
    stems = [s for s in every if "01" < s[:2] and every.index(s) <= max(every.index(w) for w in wanted)]
    fractions = dict(FRACTIONS)
    for item in args.fraction:
        name, _, value = item.partition("=")
        try:
            stem, fraction = resolve_chapter(name), float(value)
        except ValueError:
            raise SystemExit(f"--fraction takes CHAPTER=F with a chapter of {', '.join(KNOBS)} and a number F, "
                             f"got {item!r}") from None
        if stem not in KNOBS:
            raise SystemExit(f"--fraction: chapter {stem} has no length knobs; one of {', '.join(KNOBS)}")
        if not 0 < fraction <= 0.5:
            raise SystemExit(f"--fraction {item}: the fraction must lie in (0, 0.5], got {value}")
        fractions[stem] = fraction
    full = {s: {k: int(resolved_parameters(s, args.profile)[k]) for k in KNOBS[s]} for s in stems if s in KNOBS}
    samples = [sample_values(full, fractions, m) for m in (1, 2)]
    for stem in full:
        if realized(samples[1][stem], full[stem]) <= realized(samples[0][stem], full[stem]):
            raise SystemExit(f"{stem}: the two samples' knobs coincide ({samples[0][stem]}); raise its --fraction")
        for values in samples:
            shares = {k: amount(k, values[stem][k]) / amount(k, full[stem][k]) for k in full[stem]}
            if max(shares.values()) - min(shares.values()) > 1e-9:
                print(f"note: {stem}'s knobs are not scaled alike ({', '.join(f'{k} {v:.3f}' for k, v in shares.items())}); "
                      f"the estimate takes their mean as the chapter's fraction")

    import torch

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"cuda {torch.cuda.is_available()}; profile {args.profile}; chapters {', '.join(stems)}")
    base = args.keep or Path(tempfile.mkdtemp(prefix="esae-profile-time-"))
    times = []
    try:
        for i, values in enumerate(samples, start=1):
            root = make_root(base / f"sample{i}", args.profile, values, reuse=args.reuse)
            print(f"sample {i}: {json.dumps(values)}; load {load()}", flush=True)
            seconds, wall = run_chapters(root, args.profile, stems, force=not args.reuse)
            times.append(seconds)
            print(f"  done in {wall:.0f} s; load {load()}; " + ", ".join(f"{s[:2]} {t:.0f} s" for s, t in seconds.items()),
                  flush=True)
    finally:
        if args.keep is None:
            shutil.rmtree(base, ignore_errors=True)

    rows, total = [], 0.0
    print(f"\n{'chapter':<20}{'sample 1':>26}{'sample 2':>26}{'estimate (min)':>16}")
    for stem in stems:
        t1, t2 = times[0][stem], times[1][stem]
        if stem in full:
            r1, r2 = realized(samples[0][stem], full[stem]), realized(samples[1][stem], full[stem])
            estimate = extrapolate(t1, t2, r1, r2)
            s1, s2 = f"{t1:.0f} s at {r1:.3f}", f"{t2:.0f} s at {r2:.3f}"
        else:  # no knob: the same work both times
            r1 = r2 = None
            estimate = (t1 + t2) / 2
            s1, s2 = f"{t1:.0f} s", f"{t2:.0f} s"
        total += estimate
        rows.append({"chapter": stem, "seconds": [t1, t2], "fractions": [r1, r2], "estimate_s": estimate,
                     "knobs": [samples[0].get(stem), samples[1].get(stem)], "full": full.get(stem)})
        print(f"{stem:<20}{s1:>26}{s2:>26}{estimate / 60:>16.1f}")
    print(f"{'total':<20}{'':>52}{total / 60:>16.1f}  ({total / 3600:.1f} h)")
    if args.json:
        args.json.write_text(json.dumps({"profile": args.profile, "rows": rows, "total_s": total}, indent=1))


if __name__ == "__main__":
    main()
