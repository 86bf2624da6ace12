"""User-supplied text (actors, reasons, values in links) is shown literally in the app, never as markdown or HTML."""

from __future__ import annotations

import re
from pathlib import Path

from streamlit.testing.v1 import AppTest

from woe_core import promote

APP = str(Path(__file__).resolve().parent.parent / "app.py")
ACTOR = "[click me](http://evil.example) **loud** <img src=x onerror=alert(1)> :red[x]\x1b[2J"


def _page(name: str, query: dict | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params.update(query or {})
    at.switch_page(f"pages/{name}.py")
    at.run()
    assert not at.exception, at.exception
    return at


def _texts(at) -> list[str]:
    return (
        [m.value for m in at.markdown]
        + [c.value for c in at.caption]
        + [s.value for s in at.success]
        + [e.value for e in at.error]
        + [w.value for w in at.warning]
    )


def test_an_actor_with_markdown_and_html_is_shown_literally(two_models):
    engine, first, second = two_models
    promote.promote(engine, second, ACTOR, "reason with **markdown**")
    home = _page("home")
    shown = next(t for t in _texts(home) if "promoted by" in t)
    actor_part = shown.split("promoted by ", 1)[1]
    assert "\x1b" not in actor_part
    assert re.search(r"(?<!\\)[\[\]*<>]|(?<!\\):[a-z]", actor_part) is None, actor_part  # metacharacters escaped
    assert "\\[click me\\]" in actor_part and "\\<img" in actor_part and "\\x1b" in actor_part


def test_a_listing_in_the_link_is_shown_literally(two_models):
    at = _page("lookup", {"listing": "**1** [x](http://evil.example)"})
    shown = next(t for t in _texts(at) if "is not a valid listing id" in t)
    assert "\\*\\*1\\*\\*" in shown and "\\[x\\](" in shown
