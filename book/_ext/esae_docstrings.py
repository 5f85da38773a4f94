"""Sphinx extension for the API reference: read the package's docstrings as plain text where they
use reST markup by accident. ``|G|`` (the order of the group) is written literally in the docstrings,
and reST would take it for a substitution reference."""

from __future__ import annotations

import re

_BARS = re.compile(r"(?<![|\\`])\|([A-Za-z][A-Za-z0-9_]*)\|(?![|_`])")


def _escape_bars(app, what, name, obj, options, lines: list[str]) -> None:  # noqa: ARG001
    for i, line in enumerate(lines):
        if "``" not in line:
            lines[i] = _BARS.sub(r"\\|\1\\|", line)
        else:  # leave inline literals alone
            parts = line.split("``")
            lines[i] = "``".join(_BARS.sub(r"\\|\1\\|", p) if k % 2 == 0 else p for k, p in enumerate(parts))


def setup(app):
    app.connect("autodoc-process-docstring", _escape_bars)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
