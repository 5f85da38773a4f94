"""The reproduction summary: every chapter's verdicts, read from ``results/<profile>/*.json``.

The summary computes nothing: each chapter judges the papers' claims once, from its own numbers
(:mod:`esae.verdicts`), and writes the verdicts into its result file; this module only reads them,
for every chapter that has a result file (a new chapter appears under its own heading without a
change here). A chapter whose result file is missing is listed as "not run".
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from esae import verdicts as verdicts_mod
from esae.params import chapter_stems
from esae.results import read_results, results_dir
from esae.runtime import repo_root


@dataclass
class Chapter:
    """One chapter's part of the summary: ``status`` is ``"ok"``, ``"not run"`` (no result file)
    or ``"no verdicts"`` (a result file written before verdicts were recorded)."""

    stem: str
    title: str
    status: str
    verdicts: list[dict[str, str]] = field(default_factory=list)


def chapter_title(stem: str, root: Path | None = None) -> str:
    """The chapter's title: the first ``# # `` heading of ``notebooks/<stem>.py`` (else the stem)."""
    path = (root or repo_root()) / "notebooks" / f"{stem}.py"
    if path.is_file():
        for line in path.read_text().splitlines():
            if line.startswith("# # "):
                return line[4:].strip()
    return stem


def _load(profile: str, stem: str) -> dict[str, Any] | None:
    try:
        return read_results(profile, stem)
    except FileNotFoundError:
        return None


def chapters(profile: str) -> list[Chapter]:
    """Every chapter with verdicts, in book order: those with a result file holding a
    ``"verdicts"`` list, and those :mod:`esae.verdicts` judges (listed as not run when their result
    file is missing)."""
    found = {p.stem for p in results_dir(profile).glob("[0-9][0-9]*_*.json")} if results_dir(profile).is_dir() else set()
    stems = sorted(set(verdicts_mod.CHAPTERS) | found | {s for s in chapter_stems() if s in found})
    out = []
    for stem in stems:
        data = _load(profile, stem)
        if data is None:
            out.append(Chapter(stem, chapter_title(stem), "not run"))
        elif isinstance(data.get("verdicts"), list):
            if data["verdicts"]:
                out.append(Chapter(stem, chapter_title(stem), "ok", data["verdicts"]))
        elif stem in verdicts_mod.CHAPTERS:
            out.append(Chapter(stem, chapter_title(stem), "no verdicts"))
    return out


def claims(profile: str) -> list[dict[str, str]]:
    """Every verdict of every chapter, in book order, each with its ``chapter`` stem added; a chapter
    that was not run (or wrote no verdicts) gives one ``not run`` entry."""
    rows = []
    for ch in chapters(profile):
        if ch.status == "ok":
            rows += [{**v, "chapter": ch.stem} for v in ch.verdicts]
        else:
            why = (f"results/{profile}/{ch.stem}.json missing" if ch.status == "not run"
                   else f"results/{profile}/{ch.stem}.json holds no verdicts: run the chapter again")
            rows.append({"id": "not-run", "source": "", "claim": f"chapter {ch.stem}", "paper": "", "this_run": why,
                         "verdict": "not run", "test": "", "chapter": ch.stem})
    return rows


def counts(profile: str) -> dict[str, int]:
    """How many of the profile's verdicts say each of :data:`esae.verdicts.VERDICTS`."""
    return verdicts_mod.counts(claims(profile))


def counts_line(profile: str) -> str:
    """One sentence: the profile's verdict counts."""
    n = counts(profile)
    return (f"Profile **{profile}**: {n['agrees']} claims agree, {n['partly']} partly, {n['within noise']} within "
            f"noise, {n['differs']} differ, {n['reported']} are reported without a paper number, "
            f"{n['not run']} were not run.")


def _number(stem: str) -> str:
    """``06b_jitter`` -> ``6b``."""
    head = stem.split("_", 1)[0]
    return head.lstrip("0") or "0"


def claims_markdown(profile: str, heading: str = "###", test: bool = True, link: bool = False) -> str:
    """Every chapter's verdicts under a heading of its own (``heading`` level, "6. Title"), as
    Markdown tables; ``link`` adds a ``{doc}`` link to the chapter (for pages next to the chapters)."""
    text = ""
    for ch in chapters(profile):
        text += f"{heading} {_number(ch.stem)}. {ch.title}\n\n"
        if link:
            text += f"From {{doc}}`{ch.stem}`; its closing section shows the same list.\n\n"
        if ch.status == "ok":
            text += verdicts_mod.markdown(ch.verdicts, test=test) + "\n"
        elif ch.status == "not run":
            text += f"Not run: `results/{profile}/{ch.stem}.json` is missing.\n\n"
        else:
            text += f"`results/{profile}/{ch.stem}.json` holds no verdicts: run the chapter again.\n\n"
    return text


def timings_markdown(profile: str) -> str:
    """Wall time of every chapter and the machine, from ``results/<profile>/timings.json``."""
    data = _load(profile, "timings")
    if not data:
        return "No chapter timings recorded for this profile."
    rows = "| chapter | wall time |\n|---|---|\n"
    for stem, seconds in sorted(data["chapters"].items()):
        rows += f"| {stem} | {seconds / 60:.1f} min ({seconds:.0f} s) |\n"
    total = sum(v for k, v in data["chapters"].items() if not k.endswith("_summary"))
    rows += f"| **total (every chapter but the summary)** | **{total / 60:.1f} min** |\n"
    m = data.get("machine", {})
    rows += (f"\nMachine: {m.get('cpu', '?')}, {m.get('cpus', '?')} CPUs, torch {m.get('torch', '?')} "
             f"with {m.get('torch_threads', '?')} threads, GPU: {m.get('gpu') or 'none'}. Each time is the "
             "chapter's most recent execution: one that found its models in the cache (after a change to "
             "the code, say) is faster than a cold run.")
    return rows


def intro_markdown(profile: str, summary_doc: str = "chapters/08_summary") -> str:
    """The book's front page facts for ``profile``: the verdict counts with a link to the summary
    page, the verdicts on the papers' main results (RESULT 1–3, SAE Match; not the "reported" rows),
    and the chapters' wall times from ``timings.json``."""
    rows = [r for r in claims(profile) if r["verdict"] != "reported" and r["source"].startswith(("RESULT", "SAE Match"))]
    n = verdicts_mod.counts(claims(profile))
    text = (f"**What this run found** (profile `{profile}`): of the papers' claims the chapters test, "
            f"{n['agrees']} agree, {n['partly']} partly agree, {n['within noise']} are within noise and "
            f"{n['differs']} differ; {n['reported']} more measurements are reported without a paper number"
            + (f" and {n['not run']} were not run" if n["not run"] else "")
            + f". The {{doc}}`summary <{summary_doc}>` lists every claim with its test; the chapters explain "
            "each number.\n\n")
    if rows:
        text += "The papers' main results:\n\n| claim | paper | this run | verdict |\n|---|---|---|---|\n"
        for r in rows:
            cells = [f"{r['source']}: {r['claim']}" if r["source"] else r["claim"], r["paper"], r["this_run"],
                     verdicts_mod.VERDICTS.get(r["verdict"], r["verdict"])]
            text += "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |\n"
    text += "\n**Run times** of this build's chapters:\n\n" + timings_markdown(profile) + "\n"
    return text


README_START, README_END = "<!-- summary:start -->", "<!-- summary:end -->"


def update_readme(profile: str, path: Path) -> None:
    """Replace the text between ``<!-- summary:start -->`` and ``<!-- summary:end -->`` in
    ``path`` with this profile's claims and timings (atomically)."""
    text = path.read_text()
    if text.count(README_START) != 1 or text.count(README_END) != 1:
        raise ValueError(f"{path} must contain {README_START} and {README_END} exactly once")
    head, rest = text.split(README_START)
    _, tail = rest.split(README_END)
    block = (f"{README_START}\n_Generated by `python -m esae.summary --profile {profile} --readme README.md` "
             f"from the `{profile}` run's result files._\n\n{counts_line(profile)}\n\n"
             f"{claims_markdown(profile, '####', test=False)}"
             f"{timings_markdown(profile)}\n{README_END}")
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(head + block + tail)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    """``python -m esae.summary --profile default``: print the claims table (Markdown);
    with ``--readme README.md`` write it, with the chapter timings, into the README instead."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m esae.summary", description=main.__doc__)
    parser.add_argument("--profile", default="default", choices=("smoke", "default", "paper"))
    parser.add_argument("--readme", type=Path, help="a Markdown file with summary markers to update")
    args = parser.parse_args(argv)
    if args.readme is not None:
        update_readme(args.profile, args.readme)
        print(f"updated {args.readme}")
    else:
        print(counts_line(args.profile) + "\n\n" + claims_markdown(args.profile))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
