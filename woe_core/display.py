"""Showing untrusted text and durations to people: in a terminal and in Streamlit markdown.

Actors, reasons and model keys come from users and from the database; printed raw
they could move the cursor, clear the screen or forge extra lines in a terminal,
and in markdown they could add links, images or formatting. These helpers make
such text inert.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import timedelta

# Unicode categories that are never printed as themselves: controls (C0, DEL, C1),
# format characters (bidirectional overrides, zero-width joiners), surrogates,
# unassigned code points and the line and paragraph separators.
_INERT_CATEGORIES = {"Cc", "Cf", "Cs", "Cn", "Co", "Zl", "Zp"}


def _escape_char(ch: str) -> str:
    code = ord(ch)
    if ch == "\n":
        return "\\n"
    if ch == "\r":
        return "\\r"
    if ch == "\t":
        return "\\t"
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def terminal_text(value: object) -> str:
    """``value`` as one line of text with every control or format character escaped like ``repr`` does.

    ``"ok\\x1b[2J"`` becomes ``ok\\x1b[2J`` with a literal backslash, so an ANSI escape,
    a newline or a bidirectional override in an actor, a reason or a model key is
    shown, not obeyed. Printable text (accents, CJK, emoji) is left as it is.
    """
    text = value if isinstance(value, str) else str(value)
    if text.isprintable():
        return text
    return "".join(_escape_char(ch) if unicodedata.category(ch) in _INERT_CATEGORIES else ch for ch in text)


# Characters that start markdown or HTML anywhere in a line: escapes, code spans, emphasis,
# links and images, HTML tags and autolinks, strikethrough, LaTeX. An underscore only
# between two letters or digits (``model_key``) starts nothing and stays as it is; a
# colon starts Streamlit's ``:red[...]``, ``:material/...:`` and emoji short codes only
# before a letter.
_MARKDOWN_INLINE = re.compile(r"([\\`*\[\]<>~$&]|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])|:(?=[A-Za-z]))")
# Characters that start a block (heading, list, quote, rule) at the beginning of a line.
_MARKDOWN_BLOCK_START = re.compile(r"^(\s*)([#>+\-=|]|\d+[.)])")


def markdown_text(value: object) -> str:
    """``value`` escaped for Streamlit markdown (``st.markdown``, ``st.caption``, ``st.error``...).

    Control characters are escaped as in ``terminal_text`` (so the text is one line);
    every markdown or HTML metacharacter that could start formatting gets a backslash,
    so the text shows literally: no link, image, emphasis, heading, list, code span,
    HTML tag, LaTeX, colored text or ``:material/...:`` icon can be injected.
    """
    text = _MARKDOWN_INLINE.sub(r"\\\1", terminal_text(value))
    return _MARKDOWN_BLOCK_START.sub(lambda m: m[1] + m[2][:-1] + "\\" + m[2][-1], text)


def human_duration(value: timedelta | float) -> str:
    """A duration (``timedelta`` or seconds) in human units: "42 s", "6 min 58 s", "1 h 02 min", "2 d 3 h".

    Two units at most, the larger first; negative durations get a leading "-".
    """
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    if seconds < 10:
        return f"{sign}{seconds:.1f} s"
    whole = int(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{sign}{days} d {hours} h"
    if hours:
        return f"{sign}{hours} h {minutes:02d} min"
    if minutes:
        return f"{sign}{minutes} min {secs} s"
    return f"{sign}{secs} s"
