"""monitoring/runbook.md as HTML for the operations page (/ops/runbook).

Each alert has a section headed by its name (`## AiccHostDown`); the section gets the id
`alert-name-aicchostdown`, the anchor the alerts' runbook_url ends with (monitoring/model.py), so a
link to an alert's section works here as it does in the repository. Raw HTML in the file is not
passed through (markdown-it's js-default preset), and links with script schemes are dropped: the page
shows text, never markup from the file.
"""

from __future__ import annotations

import re
from functools import cache
from importlib.resources import files
from itertools import pairwise

from markdown_it import MarkdownIt

_ALERT_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


def render(text: str) -> str:
    md = MarkdownIt("js-default")
    tokens = md.parse(text)
    for opening, inline in pairwise(tokens):
        name = inline.content.strip()
        if opening.type == "heading_open" and opening.tag == "h2" and _ALERT_NAME.fullmatch(name):
            opening.attrSet("id", f"alert-name-{name.lower()}")
    html: str = md.renderer.render(tokens, md.options, {})
    return html


@cache
def runbook_html() -> str:
    """The installed runbook, rendered once: it changes only with the package."""
    return render(files("aicc.monitoring").joinpath("runbook.md").read_text(encoding="utf-8"))
