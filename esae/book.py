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
traceback; for a kernel that died mid-cell, the signal, the cell and the kernel's own stderr)
and exit status 1 or 2. ``python -m esae.book params 04 --profile smoke`` writes a
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
KERNEL_DIED = "the kernel died"  # ChapterFailed.ename when the kernel ended mid-cell


class ChapterFailed(RuntimeError):
    """A chapter stopped with an error; ``str()`` is one line (chapter, profile, the error's
    last line) and :attr:`notebook` keeps the executed notebook with the full traceback."""

    def __init__(self, stem: str, profile: str, ename: str, evalue: str, notebook: Path | None,
                 kernel_log: Path | None = None):
        self.stem, self.profile, self.ename, self.evalue, self.notebook = stem, profile, ename, evalue, notebook
        self.kernel_log = kernel_log  # a dead kernel's own stderr and stdout, when it wrote any
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
    removed += sweep(system_temp(), "esae-kernel-", ".log")
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


class Progress:
    """What the running chapter has done, for the live progress line: code cells done of the
    total, the section (last ``## `` heading) the running cell belongs to, the elapsed time and the
    chapter's previous wall time (``results/<profile>/timings.json``) as an estimate."""

    def __init__(self, stem: str, cells: list, estimate: float | None):
        self.stem, self.estimate, self.start = stem, estimate, time.perf_counter()
        self.done, self.section, self.running = 0, "", None
        self.set_cells(cells)

    def set_cells(self, cells: list) -> None:
        """The notebook being executed (papermill's copy has the injected parameters cell)."""
        tags = [t for c in cells for t in c.get("metadata", {}).get("tags", [])]
        # papermill adds its injected-parameters cell after the defaults
        self.total = sum(c.get("cell_type") == "code" for c in cells) + (
            "parameters" in tags and "injected-parameters" not in tags)
        self._code = [c.get("cell_type") == "code" for c in cells]
        self._sections, heading = [], ""
        for cell in cells:  # the section each cell lies in
            if cell.get("cell_type") == "markdown":
                for line in str(cell.get("source", "")).splitlines():
                    if line.startswith("## ") or (line.startswith("# ") and not heading):
                        heading = line.lstrip("# ").strip()
            self._sections.append(heading)

    def cell_started(self, index: int) -> None:
        self.running = index
        if 0 <= index < len(self._sections):
            self.section = self._sections[index]

    def where(self) -> str:
        """``cell 13 of 40 (The sparsity frontier)``: the code cell running now."""
        section = f" ({self.section})" if self.section else ""
        index = self.running if self.running is not None else 0
        return f"cell {sum(self._code[:index + 1])} of {self.total}{section}"

    def cell_finished(self, cell) -> None:
        if cell.get("cell_type") == "code":
            self.done += 1

    def line(self) -> str:
        """``[esae] 05_equivariant_sae  12/40 cells  1:02 of ~4:30  · The sparsity frontier``"""
        elapsed = time.perf_counter() - self.start
        of = f" of ~{_clock(self.estimate)}" if self.estimate else ""
        section = f"  · {self.section}" if self.section else ""
        return f"[esae] {self.stem}  {self.done}/{self.total} cells  {_clock(elapsed)}{of}{section}"


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else \
        f"{seconds // 60}:{seconds % 60:02d}"


_PROGRESS: Progress | None = None  # the chapter executing now (one at a time per process)


def _progress_engine():
    """papermill's nbclient engine, reporting each cell's start and end to :data:`_PROGRESS`."""
    from papermill.engines import NBClientEngine

    class ProgressEngine(NBClientEngine):
        @classmethod
        def execute_managed_notebook(cls, nb_man, kernel_name, **kwargs):
            start, complete = nb_man.cell_start, nb_man.cell_complete
            if _PROGRESS is not None:
                _PROGRESS.set_cells(nb_man.nb.cells)

            def cell_start(cell, cell_index=None, **kw):
                if _PROGRESS is not None and cell_index is not None:
                    _PROGRESS.cell_started(cell_index)
                return start(cell, cell_index, **kw)

            def cell_complete(cell, cell_index=None, **kw):
                if _PROGRESS is not None:
                    _PROGRESS.cell_finished(cell)
                return complete(cell, cell_index, **kw)

            nb_man.cell_start, nb_man.cell_complete = cell_start, cell_complete
            return super().execute_managed_notebook(nb_man, kernel_name, **kwargs)

    return ProgressEngine


@contextlib.contextmanager
def _reporting(progress: Progress, every: float | None, stream=None):
    """Print ``progress.line()`` every ``every`` seconds while the block runs (``None``: never);
    on a terminal the line is rewritten in place, elsewhere (a log, a captured test) each report is
    a line of its own."""
    global _PROGRESS
    stream = stream or sys.stdout
    tty = stream.isatty()
    stop = threading.Event()

    def report() -> None:
        while True:
            text = progress.line()
            stream.write(f"\r\x1b[2K{text}" if tty else text + "\n")
            stream.flush()
            if stop.wait(every):
                break

    thread = threading.Thread(target=report, daemon=True) if every else None
    _PROGRESS = progress
    if thread:
        thread.start()
    try:
        yield
    finally:
        stop.set()
        if thread:
            thread.join()
            if tty:
                stream.write("\r\x1b[2K")
                stream.flush()
        _PROGRESS = None


def previous_seconds(profile: str, stem: str) -> float | None:
    """The chapter's last recorded wall time (``timings.json``), or ``None``."""
    from esae.results import results_dir

    try:
        return float(json.loads((results_dir(profile) / "timings.json").read_text())["chapters"][stem])
    except (OSError, ValueError, KeyError, TypeError):
        return None


@dataclass
class ChapterRun:
    stem: str
    output: Path
    seconds: float
    skipped: bool


def execute_chapter(stem: str, profile: str, *, out_dir: Path | None = None,
                    root: Path | None = None, force: bool = False, progress_every: float | None = None) -> ChapterRun:
    """Execute chapter ``stem`` under ``profile`` into ``out_dir`` (default ``book/chapters``).

    Raises :class:`esae.params.ProfileError` (before any kernel starts) for a bad profile or
    parameter, and :class:`ChapterFailed` (one line; the executed notebook with the traceback is
    kept as ``<out_dir>/failed/<stem>.ipynb``) if the chapter fails; the previous executed copy,
    if any, and the chapter's results are left untouched. With ``progress_every`` (seconds), a
    progress line (:class:`Progress`) is printed that often while the chapter runs.
    """
    import jupytext
    import nbformat
    import papermill
    from nbclient.exceptions import DeadKernelError

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

    source_nb = jupytext.read(root / "notebooks" / f"{stem}.py")
    source_path = _write_tmp(source_nb)
    progress = Progress(stem, source_nb.cells, previous_seconds(profile, stem))
    fd, tmp_out = tempfile.mkstemp(prefix=owned_prefix(f".{stem}-"), suffix=".ipynb", dir=out_dir)
    os.close(fd)
    failed = out_dir / FAILED / f"{stem}.ipynb"
    failed_log = failed.with_suffix(".kernel.log")  # a dead kernel's own output, kept beside its notebook
    fd, kernel_log = tempfile.mkstemp(prefix=owned_prefix("esae-kernel-"), suffix=".log", dir=system_temp())
    kernel = _KernelWatch(os.fdopen(fd, "wb"))
    env_before = dict(os.environ)
    try:
        # figures must reach the notebook: the kernel uses the inline backend even when the
        # calling shell exported MPLBACKEND=Agg
        os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
        os.environ.setdefault("ESAE_PROGRESS", "0")
        os.environ["ESAE_BOOK"] = "1"  # figures are glued and captioned for Jupyter Book (esae.figures)
        os.environ.setdefault("ESAE_ROOT", str(root))
        os.environ.setdefault("PYTHONPATH", str(root))
        start = time.perf_counter()
        try:
            with _interrupt_reaches_kernel(), _quiet_papermill(), _reporting(progress, progress_every):
                papermill.execute_notebook(str(source_path), tmp_out, parameters=params, kernel_name="python3",
                                           cwd=str(root), progress_bar=False, log_output=False,
                                           engine_name=_ENGINE, extra_arguments=["--IPKernelApp.log_level=ERROR"],
                                           kernel_manager_class=kernel.manager_class())
        except KeyboardInterrupt:
            # the kernel got the SIGINT too, but papermill's shutdown may kill it before its own
            # cleanup ran: once it has ended, remove the temporaries it owned
            _end_children(timeout=10)
            sweep_stale_temporaries(out_dir, root, profile)
            raise
        except papermill.PapermillExecutionError as err:
            kept = _keep(Path(tmp_out), failed)
            failed_log.unlink(missing_ok=True)  # from an earlier dead kernel
            raise ChapterFailed(stem, profile, err.ename, err.evalue, kept) from None
        except DeadKernelError:
            # the kernel ended mid-cell (killed for memory, a crash in native code): say which cell
            # and how, keep what ran and what the kernel last wrote
            kept = _keep(Path(tmp_out), failed)
            kernel.log.close()
            failed_log.unlink(missing_ok=True)
            log = _keep(Path(kernel_log), failed_log)
            raise ChapterFailed(stem, profile, KERNEL_DIED,
                                f"{kernel.ending()} while running {progress.where()}", kept, log) from None
        seconds = time.perf_counter() - start
        nb = nbformat.read(tmp_out, as_version=4)
        fold_parameters(nb, profile)
        nb.metadata[STAMP_KEY] = {"stamp": stamp, "profile": profile, "seconds": round(seconds, 1),
                                  "results": _result_digest(profile, stem)}
        nbformat.write(nb, tmp_out)
        os.replace(tmp_out, output)
        failed.unlink(missing_ok=True)
        failed_log.unlink(missing_ok=True)
    finally:
        os.environ.clear()
        os.environ.update(env_before)
        Path(tmp_out).unlink(missing_ok=True)
        source_path.unlink(missing_ok=True)
        kernel.log.close()
        Path(kernel_log).unlink(missing_ok=True)
    run = ChapterRun(stem, output, seconds, False)
    record_timings(profile, [run])  # per chapter, so the summary page (run last) can read them
    return run


def _keep(path: Path, to: Path) -> Path | None:
    """Move ``path`` to ``to`` (made atomically) if it holds anything; ``to`` or ``None``."""
    if not (path.is_file() and path.stat().st_size):
        return None
    to.parent.mkdir(parents=True, exist_ok=True)
    os.replace(path, to)
    return to


class _KernelWatch:
    """The kernel's own stdout and stderr go to ``log`` rather than the terminal (what a cell
    prints reaches the notebook through ipykernel; what reaches these descriptors is what the
    kernel writes outside a cell, such as a native library's message when it aborts at shutdown,
    which would break the runner's one- or two-line report), and its process is kept to say how
    it ended if it dies."""

    def __init__(self, log):
        self.log, self.process = log, None

    def manager_class(self) -> type:
        from jupyter_client.manager import AsyncKernelManager

        watch = self

        class KernelManager(AsyncKernelManager):
            async def start_kernel(self, **kw):
                kw.setdefault("stdout", watch.log)
                kw.setdefault("stderr", watch.log)
                await super().start_kernel(**kw)
                watch.process = getattr(self.provisioner, "process", None)

        return KernelManager

    def ending(self) -> str:
        """``killed by signal 9 (SIGKILL, what the out-of-memory killer sends)``, ``exit status 1``, ..."""
        code = None
        if self.process is not None:
            with contextlib.suppress(Exception):
                code = self.process.wait(timeout=5)
        if code is None:
            return "it stopped answering"
        if code < 0:
            name = signal.Signals(-code).name if -code in signal.valid_signals() else str(-code)
            why = ", what the out-of-memory killer sends" if -code == signal.SIGKILL else ""
            return f"killed by signal {-code} ({name}{why})"
        return f"exit status {code}"


_ENGINE = "esae-progress"


def _register_engine() -> None:
    from papermill.engines import papermill_engines

    if _ENGINE not in papermill_engines._engines:
        papermill_engines.register(_ENGINE, _progress_engine())


@contextlib.contextmanager
def _quiet_papermill():
    """papermill logs the kernel's traceback and warnings itself; the runner reports one line
    instead (the traceback stays in the failed notebook)."""
    import logging

    _register_engine()
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


def _end_children(timeout: float) -> None:
    """Wait up to ``timeout`` seconds for this process's children (the kernel) to end; kill the rest."""
    import psutil

    children = psutil.Process().children(recursive=True)
    _, alive = psutil.wait_procs(children, timeout=timeout)
    for child in alive:
        with contextlib.suppress(psutil.Error):
            child.kill()
    psutil.wait_procs(alive, timeout=timeout)


def fold_parameters(nb, profile: str) -> None:
    """One fold for the page's parameters instead of two: the notebook's defaults cell is removed
    from the page (``remove-cell``) and papermill's injected cell, which holds every parameter's
    value under ``profile``, gets the defaults' comments and the label "Parameters of this page
    (profile …)" (``hide-cell``)."""
    comments = {}
    for cell in nb.cells:
        tags = cell.get("metadata", {}).get("tags", [])
        if "parameters" in tags:
            for line in cell.source.splitlines():
                name, _, comment = line.partition("#")
                if comment and ("=" in name or ":" in name):
                    comments[name.split("=")[0].split(":")[0].strip()] = comment.strip()
            cell.metadata["tags"] = sorted(set(tags) | {"remove-cell"})
    label = f"Parameters of this page (profile {profile})"
    for cell in nb.cells:
        tags = cell.get("metadata", {}).get("tags", [])
        if "injected-parameters" in tags:
            lines = []
            for line in cell.source.splitlines():
                name = line.split("=")[0].strip()
                if "=" in line and name in comments and "#" not in line:
                    line = f"{line}  # {comments[name]}"
                lines.append(line)
            cell.source = "\n".join(lines)
            cell.metadata["tags"] = sorted(set(tags) | {"hide-cell"})
            cell.metadata.setdefault("mystnb", {}).update(code_prompt_show=label, code_prompt_hide=label)


def _write_tmp(nb) -> Path:
    import nbformat

    fd, path = tempfile.mkstemp(prefix=owned_prefix("esae-src-"), suffix=".ipynb")
    os.close(fd)
    nbformat.write(nb, path)
    return Path(path)


def build_html(source: Path | None = None, output: Path | None = None, quiet: bool = False,
               repository_url: str | None = None) -> Path:
    """Build the HTML book from the executed copies (warnings are errors); return index.html.

    ``quiet``: Sphinx's messages go to ``_build/jupyter-book.log`` instead of the terminal, and only
    when the build fails are its last lines printed (to stderr). ``repository_url`` (default: the
    environment's ``ESAE_REPOSITORY_URL``, which the Pages workflow sets) adds the repository and
    issue buttons that link the pages back to their source; without it the book names no host."""
    source = source or repo_root()
    build = (output or source) / "_build"
    cmd = [str(Path(sys.executable).parent / "jupyter-book"), "build", str(source), "--builder", "html",
           "--warningiserror", "--keep-going"]
    if output is not None:
        cmd += ["--path-output", str(output)]
    write_intro_facts(source)
    url = repository_url or os.environ.get("ESAE_REPOSITORY_URL")
    if url:
        cmd += ["--config", str(repository_config(source, url, build))]
    if not quiet:
        subprocess.run(cmd, check=True)
        return build / "html" / "index.html"
    build.mkdir(parents=True, exist_ok=True)
    log = build / "jupyter-book.log"
    env = {**os.environ, "NO_COLOR": "1", "TERM": "dumb"}
    with open(log, "w") as f:
        done = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
    if done.returncode:
        lines = _strip_ansi(log.read_text()).splitlines()
        problems = [line for line in lines if any(w in line for w in ("WARNING", "ERROR", "CRITICAL", "SEVERE",
                                                                     "Error", "Traceback"))]
        print("\n".join((problems or lines)[-40:]), file=sys.stderr)
        print(f"[esae] the full Sphinx output is in {_shown(log)}", file=sys.stderr)
        raise subprocess.CalledProcessError(done.returncode, cmd)
    return build / "html" / "index.html"


INTRO_FACTS = Path("book") / "generated" / "run.md"  # included by book/intro.md


def write_intro_facts(source: Path) -> Path:
    """Write the front page's facts (:func:`esae.summary.intro_markdown`) for the profile the
    executed summary page was run with, to ``source/book/generated/run.md``."""
    import nbformat

    from esae import summary

    found = sorted((source / "book" / "chapters").glob("*_summary.ipynb"))
    try:
        profile = nbformat.read(found[0], as_version=4).metadata[STAMP_KEY]["profile"]
        text = summary.intro_markdown(profile)
    except (IndexError, OSError, KeyError, ValueError):
        text = "No executed summary page: run `make book` to fill this section.\n"
    path = source / INTRO_FACTS
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def repository_config(source: Path, url: str, build: Path) -> Path:
    """``source/_config.yml`` with the repository ``url`` and its buttons, written to
    ``build/_config.repository.yml``; returns that path."""
    import yaml

    if not url.startswith(("https://", "http://")):
        raise ValueError(f"repository URL must start with https://, got {url!r}")
    config = yaml.safe_load((source / "_config.yml").read_text())
    config["repository"] = {"url": url.rstrip("/"), "branch": "main", "path_to_book": ""}
    config.setdefault("html", {}).update(use_repository_button=True, use_issues_button=True)
    build.mkdir(parents=True, exist_ok=True)
    path = build / "_config.repository.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
    return path


def _strip_ansi(text: str) -> str:
    import re

    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)


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
    run.add_argument("--out-dir", type=Path, help="write the executed chapters here (default: book/chapters)")
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
        every = float(os.environ.get("ESAE_PROGRESS_EVERY", "5")) or None
        import jupytext  # noqa: F401 - loaded before the first line, so progress lines follow it closely
        import papermill  # noqa: F401
        print(f"[esae] profile {args.profile}: {len(names)} chapter{'s' * (len(names) > 1)}, "
              f"each executed unless unchanged since its last run", flush=True)
        for stem in names:
            result = execute_chapter(stem, args.profile, force=args.force, progress_every=every,
                                     out_dir=getattr(args, "out_dir", None))
            note = "unchanged, kept" if result.skipped else f"executed in {_clock(result.seconds)}"
            print(f"[esae] {stem}: {note} -> {_shown(result.output)}", flush=True)
        if args.command == "build":
            from esae import summary

            print("[esae] building the HTML book (Sphinx) ...", flush=True)
            index = build_html(quiet=True)
            n = summary.counts(args.profile)
            print(f"[esae] verdicts ({args.profile}): {n['agrees']} agree, {n['partly']} partly, {n['within noise']} "
                  f"within noise, {n['differs']} differ, {n['reported']} reported, {n['not run']} not run; "
                  f"the summary page: {_shown(index.parent / 'book' / 'chapters' / '08_summary.html')}")
            print(f"[esae] book built: {_shown(index)}  (open file://{index.resolve()})")
    except (ProfileError, FileNotFoundError) as err:
        print(f"[esae] error: {err}", file=sys.stderr)
        return 2
    except ValueError as err:  # an unknown chapter name
        print(f"[esae] error: {err}", file=sys.stderr)
        return 2
    except ChapterFailed as err:
        print(f"[esae] {err}", file=sys.stderr)
        if err.ename == KERNEL_DIED:
            kept = ([f"the cells it ran in {_shown(err.notebook)}"] if err.notebook else []) + \
                ([f"what the kernel last wrote in {_shown(err.kernel_log)}"] if err.kernel_log else [])
            if kept:
                print(f"[esae] {'; '.join(kept)}", file=sys.stderr)
        elif err.notebook is not None:
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
