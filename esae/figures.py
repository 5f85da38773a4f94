"""Numbered, captioned figures and folded tables for the book's chapters (book layer).

``figures.show(fig, "fig-05-frontier", "caption")`` shows a matplotlib figure with its caption. When
the chapter runs for the book (``ESAE_BOOK=1``, set by :func:`esae.book.execute_chapter`), the figure
is glued (MyST-NB) and placed by a ``{glue:figure}`` directive: Jupyter Book numbers it, renders
the caption as a ``<figcaption>`` and lets the text refer to it as ``{numref}`fig-05-frontier```.
In a notebook session the figure is shown with its caption below it. Captions may hold numbers of
the run (they are generated) and MyST markup.
"""

from __future__ import annotations

import os
import re

NAME = re.compile(r"fig-[0-9]{2}[a-z]?-[a-z0-9-]+")


def in_book() -> bool:
    """True while a chapter executes for the book (``ESAE_BOOK=1``)."""
    return os.environ.get("ESAE_BOOK") == "1"


def show(fig, name: str, caption: str) -> None:
    """Show ``fig`` (a matplotlib Figure) as figure ``name`` (``fig-<chapter>-<what>``, unique in
    the book) with ``caption``, then close it so the inline backend does not show it again."""
    import matplotlib.pyplot as plt
    from IPython.display import Markdown, display

    if not NAME.fullmatch(name):
        raise ValueError(f"name must look like fig-05-frontier (fig-<chapter>-<what>), got {name!r}")
    if "```" in caption:
        raise ValueError(f"caption must not contain a code fence, got {caption!r}")
    if in_book():
        from myst_nb import glue

        glue(name, fig, display=False)
        display(Markdown(f"```{{glue:figure}} {name}\n:name: {name}\n\n{caption}\n```"))
    else:
        display(fig)
        display(Markdown(f"*Figure `{name}`.* {caption}"))
    plt.close(fig)


def folded(title: str, markdown: str) -> str:
    """``markdown`` (a long table, say) inside a fold titled ``title``: a closed ``{dropdown}`` on
    the book's page, a bold title above the text in a notebook session."""
    if "````" in markdown:
        raise ValueError("markdown must not contain a four-backtick fence")
    if in_book():
        return f"````{{dropdown}} {title}\n\n{markdown}\n````\n"
    return f"**{title}**\n\n{markdown}\n"
