"""Execute the chapters with papermill under a profile and build the Jupyter Book.

``python -m esae.book run 04 --profile smoke`` executes one chapter,
``python -m esae.book build --profile default`` executes all of them and builds the HTML.

Each chapter's Jupytext source ``notebooks/<stem>.py`` is converted to a notebook, executed
with the profile's parameters injected, and written (atomically) to ``book/chapters/<stem>.ipynb``,
the copy the book is built from. A chapter whose source, parameters, ``esae`` package and the
results of the chapters before it are unchanged since its last successful execution, and whose
own result file is still what that execution wrote, is not executed again.

Every parameter is validated before a kernel starts (:func:`esae.params.resolved_parameters`).
A bad profile or a failing chapter ends the command with one or two lines on the terminal
(chapter, parameter, what is allowed; the path of the failed notebook, which keeps the full
traceback) and exit status 1 or 2. ``python -m esae.book params 04 --profile smoke`` writes a
chapter's parameters as flat YAML for ``papermill -f``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from esae.params import ProfileError, chapter_number, chapter_stems, check_profile, resolved_parameters
from esae.runtime import repo_root
from esae.temporaries import owned_prefix, sweep, system_temp

STAMP_KEY = "esae"
FAILED = "failed"  # book/chapters/failed/<stem>.ipynb: the last failed execution, traceback included


class ChapterFailed(RuntimeError):
    """A chapter stopped with an error; ``str()`` is one line (chapter, profile, the error's
    last line) and :attr:`notebook` keeps the executed notebook with the full traceback."""

    def __init__(self, stem: str, profile: str, ename: str, evalue: str, notebook: Path | None):
        self.stem, self.profile, self.ename, self.evalue, self.notebook = stem, profile, ename, evalue, notebook
        last = " ".join(str(evalue).strip().splitlines()[-1:]) if str(evalue).strip() else ""
        super().__init__(f"{stem} ({profile}) failed: {ename}: {last}" if last else f"{stem} ({profile}) failed: {ename}")


def chapters(root: Path | None = None) -> list[str]:
    """The chapter stems, in book order (``01_groups``, ``02_dataset``, ...)."""
    return chapter_stems(root)


def sweep_stale_temporaries(out_dir: Path | None = None, root: Path | None = None,
                            profile: str | None = None) -> list[Path]:
    """Remove what killed runs left behind: hidden executed copies in ``out_dir``, the system
    temp folder's ``esae-src-*.ipynb``, the cache's ``.tmp-*`` folders and the results'
    temporaries, each only when the process that made it has ended."""
    from esae.cache import sweep_stale
    from esae.results import results_dir

    out_dir = out_dir or (root or repo_root()) / "book" / "chapters"
    removed = sweep(out_dir, ".", ".ipynb", name=r"[0-9][0-9][a-z]?_.*")
    removed += sweep(system_temp(), "esae-src-", ".ipynb")
    removed += sweep_stale()
    for name in ([profile] if profile else []):
        removed += sweep(results_dir(name), ".", ".json")
    return removed


def _result_digest(profile: str, stem: str) -> str | None:
    """SHA-256 of the chapter's result file, ``None`` when there is none."""
    from esae.results import results_dir

    path = results_dir(profile) / f"{stem}.json"
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def resolve_chapter(name: str, root: Path | None = None) -> str:
    """Accept a stem, its number (``04``, ``06b``) or a number without the leading zero (``4``)."""
    stems = chapters(root)
    for stem in stems:
        if name == stem or name == chapter_number(stem) or (name.isdigit() and stem.startswith(f"{int(name):02d}_")):
            return stem
    raise ValueError(f"chapter must be one of {', '.join(stems)} (or its number), got {name!r}")


def _stamp(root: Path, stem: str, params: dict, profile: str) -> str:
    """What a chapter's executed copy depends on: its source, its parameters, the package, and the
    result files of the chapters before it (a later chapter reuses an earlier one's artifacts, and
    the summary page reads the results and, from ``timings.json``, the other chapters' wall times)."""
    from esae.results import results_dir

    h = hashlib.sha256()
    h.update((root / "notebooks" / f"{stem}.py").read_bytes())
    h.update(json.dumps(params, sort_keys=True).encode())
    for path in sorted((root / "esae").rglob("*.py")):
        h.update(path.name.encode() + path.read_bytes())
    results = results_dir(profile)
    for before in (s for s in chapters(root) if s < stem):
        path = results / f"{before}.json"
        if path.is_file():
            h.update(before.encode() + path.read_bytes())
    timings = results / "timings.json"
    if stem.endswith("_summary"):
        try:
            times = json.loads(timings.read_text()).get("chapters", {})
        except (OSError, ValueError):
            times = {}
        h.update(json.dumps({k: v for k, v in times.items() if k != stem}, sort_keys=True).encode())
    return h.hexdigest()


@dataclass
class ChapterRun:
    stem: str
    output: Path
    seconds: float
    skipped: bool


def execute_chapter(stem: str, profile: str, *, out_dir: Path | None = None,
                    root: Path | None = None, force: bool = False) -> ChapterRun:
    """Execute chapter ``stem`` under ``profile`` into ``out_dir`` (default ``book/chapters``).

    Raises :class:`esae.params.ProfileError` (before any kernel starts) for a bad profile or
    parameter, and :class:`ChapterFailed` (one line; the executed notebook with the traceback is
    kept as ``<out_dir>/failed/<stem>.ipynb``) if the chapter fails; the previous executed copy,
    if any, and the chapter's results are left untouched.
    """
    import jupytext
    import nbformat
    import papermill

    check_profile(profile)
    root = root or repo_root()
    stem = resolve_chapter(stem, root)
    out_dir = out_dir or root / "book" / "chapters"
    out_dir.mkdir(parents=True, exist_ok=True)
    sweep_stale_temporaries(out_dir, root, profile)
    output = out_dir / f"{stem}.ipynb"
    params = resolved_parameters(stem, profile, root)
    stamp = _stamp(root, stem, params, profile)
    if not force and output.is_file():
        try:
            meta = nbformat.read(output, as_version=4).metadata.get(STAMP_KEY, {})
        except Exception:  # noqa: BLE001 - an unreadable copy is simply re-executed
            meta = {}
        # a chapter whose result file is gone (or was overwritten since) runs again
        if meta.get("stamp") == stamp and meta.get("results") == _result_digest(profile, stem):
            return ChapterRun(stem, output, 0.0, True)

    source_path = _write_tmp(jupytext.read(root / "notebooks" / f"{stem}.py"))
    fd, tmp_out = tempfile.mkstemp(prefix=owned_prefix(f".{stem}-"), suffix=".ipynb", dir=out_dir)
    os.close(fd)
    failed = out_dir / FAILED / f"{stem}.ipynb"
    env_before = dict(os.environ)
    try:
        # figures must reach the notebook: the kernel uses the inline backend even when the
        # calling shell exported MPLBACKEND=Agg
        os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
        os.environ.setdefault("ESAE_PROGRESS", "0")
        os.environ.setdefault("ESAE_ROOT", str(root))
        os.environ.setdefault("PYTHONPATH", str(root))
        start = time.perf_counter()
        try:
            with _interrupt_reaches_kernel(), _quiet_papermill():
                papermill.execute_notebook(str(source_path), tmp_out, parameters=params, kernel_name="python3",
                                           cwd=str(root), progress_bar=False, log_output=False,
                                           extra_arguments=["--IPKernelApp.log_level=ERROR"])
        except papermill.PapermillExecutionError as err:
            kept = None
            if Path(tmp_out).is_file() and Path(tmp_out).stat().st_size:
                failed.parent.mkdir(exist_ok=True)
                os.replace(tmp_out, failed)
                kept = failed
            raise ChapterFailed(stem, profile, err.ename, err.evalue, kept) from None
        seconds = time.perf_counter() - start
        nb = nbformat.read(tmp_out, as_version=4)
        for cell in nb.cells:
            tags = cell.get("metadata", {}).get("tags", [])
            if "parameters" in tags or "injected-parameters" in tags:
                cell.metadata["tags"] = sorted(set(tags) | {"hide-cell"})
        nb.metadata[STAMP_KEY] = {"stamp": stamp, "profile": profile, "seconds": round(seconds, 1),
                                  "results": _result_digest(profile, stem)}
        nbformat.write(nb, tmp_out)
        os.replace(tmp_out, output)
        failed.unlink(missing_ok=True)
    finally:
        os.environ.clear()
        os.environ.update(env_before)
        Path(tmp_out).unlink(missing_ok=True)
        source_path.unlink(missing_ok=True)
    run = ChapterRun(stem, output, seconds, False)
    record_timings(profile, [run])  # per chapter, so the summary page (run last) can read them
    return run


@contextlib.contextmanager
def _quiet_papermill():
    """papermill logs the kernel's traceback and warnings itself; the runner reports one line
    instead (the traceback stays in the failed notebook)."""
    import logging

    logger = logging.getLogger("papermill")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


@contextlib.contextmanager
def _interrupt_reaches_kernel():
    """Ctrl-C while a chapter runs: jupyter_client starts the kernel in its own session, so the
    terminal's SIGINT reaches only this process, where the client swallows it and the chapter
    runs on. Forward it to the kernel (which interrupts the running cell, so papermill fails and
    nothing is written), then raise KeyboardInterrupt here."""
    import psutil

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def forward(signum, frame):
        for child in psutil.Process().children(recursive=True):
            with contextlib.suppress(psutil.Error):
                child.send_signal(signal.SIGINT)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, forward)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _write_tmp(nb) -> Path:
    import nbformat

    fd, path = tempfile.mkstemp(prefix=owned_prefix("esae-src-"), suffix=".ipynb")
    os.close(fd)
    nbformat.write(nb, path)
    return Path(path)


def build_html(source: Path | None = None, output: Path | None = None) -> Path:
    """Build the HTML book from the executed copies (warnings are errors); return index.html."""
    source = source or repo_root()
    cmd = [str(Path(sys.executable).parent / "jupyter-book"), "build", str(source), "--builder", "html",
           "--warningiserror", "--keep-going"]
    if output is not None:
        cmd += ["--path-output", str(output)]
    subprocess.run(cmd, check=True)
    return (output or source) / "_build" / "html" / "index.html"


def record_timings(profile: str, runs: list[ChapterRun]) -> None:
    """Merge the chapters' wall times (seconds) into ``results/<profile>/timings.json``, with the
    machine they ran on."""
    from esae.results import read_results, write_results
    from esae.runtime import machine_description

    try:
        data = read_results(profile, "timings")
    except FileNotFoundError:
        data = {"chapters": {}}
    for run in runs:
        if not run.skipped:
            data["chapters"][run.stem] = round(run.seconds, 1)
    data["machine"] = machine_description()
    write_results(profile, "timings", data)


def write_params(stem: str, profile: str, output: Path | None = None) -> str:
    """Chapter ``stem``'s parameters under ``profile`` as flat YAML (every declared parameter,
    validated), for ``papermill -f``; written to ``output`` when given. Returns the text."""
    import yaml

    stem = resolve_chapter(stem)
    params = resolved_parameters(stem, profile)
    text = (f"# {stem} under profile {profile!r}: python -m esae.book params {chapter_number(stem)} --profile {profile}\n"
            + "".join(f"{k}: {_flow(v)}\n" for k, v in params.items()))
    if output is not None:
        output.write_text(text)
    return text


def _flow(value: object) -> str:
    """One YAML value on one line (lists as ``[8, 16]``)."""
    import yaml

    text = yaml.safe_dump(value, default_flow_style=True, width=1 << 20)
    return text.removesuffix("\n...\n").strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m esae.book", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="execute chapters (all when none is named)")
    run.add_argument("chapters", nargs="*")
    build = sub.add_parser("build", help="execute every chapter, then build the HTML book")
    params = sub.add_parser("params", help="write one chapter's parameters as YAML for papermill -f")
    params.add_argument("chapter")
    params.add_argument("-o", "--output", type=Path, help="write to this file (default: print)")
    for p in (run, build, params):
        p.add_argument("--profile", default="default", choices=("smoke", "default", "paper"))
    for p in (run, build):
        p.add_argument("--force", action="store_true", help="re-execute even unchanged chapters")
    sub.add_parser("list", help="list the chapters")
    args = parser.parse_args(argv)

    if args.command == "list":
        print("\n".join(chapters()))
        return 0
    try:
        if args.command == "params":
            text = write_params(args.chapter, args.profile, args.output)
            if args.output is None:
                print(text, end="")
            return 0
        names = [resolve_chapter(c) for c in getattr(args, "chapters", [])] or chapters()
        for stem in names:  # every chapter's parameters, before the first kernel starts
            resolved_parameters(stem, args.profile)
        for stem in names:
            print(f"[esae] {stem} ({args.profile}) ...", flush=True)
            result = execute_chapter(stem, args.profile, force=args.force)
            note = "unchanged, kept" if result.skipped else f"{result.seconds:.0f} s"
            print(f"[esae] {stem}: {note} -> {_shown(result.output)}", flush=True)
        if args.command == "build":
            index = build_html()
            print(f"[esae] book built: {index}")
    except (ProfileError, FileNotFoundError) as err:
        print(f"[esae] error: {err}", file=sys.stderr)
        return 2
    except ValueError as err:  # an unknown chapter name
        print(f"[esae] error: {err}", file=sys.stderr)
        return 2
    except ChapterFailed as err:
        print(f"[esae] {err}", file=sys.stderr)
        if err.notebook is not None:
            print(f"[esae] full traceback in {_shown(err.notebook)}", file=sys.stderr)
        return 1
    except subprocess.CalledProcessError as err:
        print(f"[esae] the HTML build failed (exit {err.returncode}); its messages are above", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("[esae] interrupted; nothing half-written was kept", file=sys.stderr)
        return 130
    return 0


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(repo_root().resolve()))
    except ValueError:
        return str(path)


if __name__ == "__main__":
    raise SystemExit(main())
