"""Sphinx extension: bibliography entries labelled by author and year ("Erdogan & Lucic, 2025"),
the style of the in-text citations (``bibtex_reference_style: author_year``), instead of
sphinxcontrib-bibtex's default alpha labels ("[EL25]")."""

from __future__ import annotations

from pybtex.plugin import register_plugin
from pybtex.style.formatting.unsrt import Style as UnsrtStyle
from pybtex.style.labels import BaseLabelStyle


def _surname(person) -> str:
    return " ".join(person.last_names).replace("{", "").replace("}", "") or str(person)


class AuthorYearLabelStyle(BaseLabelStyle):
    """``Surname, year``; ``A & B, year`` for two authors; ``A et al., year`` for more."""

    def format_labels(self, sorted_entries):
        for entry in sorted_entries:
            people = entry.persons.get("author") or entry.persons.get("editor") or []
            names = [_surname(p) for p in people]
            who = (names[0] if len(names) == 1 else f"{names[0]} & {names[1]}" if len(names) == 2
                   else f"{names[0]} et al." if names else entry.key)
            yield f"{who}, {entry.fields.get('year', 'n.d.')}"


class AuthorYearStyle(UnsrtStyle):
    default_label_style = "esae_author_year"
    default_sorting_style = "author_year_title"


register_plugin("pybtex.style.labels", "esae_author_year", AuthorYearLabelStyle)
register_plugin("pybtex.style.formatting", "esae_author_year", AuthorYearStyle)


def setup(app):
    return {"parallel_read_safe": True, "parallel_write_safe": True}
