"""``python -m esae <command>``: ``export`` (a profile's trained artifacts as named sae-lens
folders, :mod:`esae.export`), ``book`` (run chapters, build the book, :mod:`esae.book`),
``sae-match`` (match SAE features across layers, :mod:`esae.sae_match`)."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

COMMANDS = {"export": "esae.export", "book": "esae.book", "sae-match": "esae.sae_match"}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(f"usage: python -m esae {{{','.join(COMMANDS)}}} ...\n\n{__doc__}")
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"python -m esae: command must be one of {', '.join(COMMANDS)}, got {command!r}", file=sys.stderr)
        return 2
    return importlib.import_module(COMMANDS[command]).main(rest)


if __name__ == "__main__":
    raise SystemExit(main())
