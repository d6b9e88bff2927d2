"""Inbound SMS keywords: opt-out, opt back in, help (CTIA and FCC practice)."""

from __future__ import annotations

import re
from typing import Literal

STOP_WORDS = frozenset(
    {"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"}
)
START_WORDS = frozenset({"START", "UNSTOP"})
HELP_WORDS = frozenset({"HELP"})

Keyword = Literal["stop", "start", "help"]

_NOT_LETTERS = re.compile(r"[^A-Za-z]+")


def classify(text: str) -> Keyword | None:
    """The keyword a whole message is, in any case and spacing ("Opt out", " stop. ")."""
    word = _NOT_LETTERS.sub("", text).upper()
    if word in STOP_WORDS:
        return "stop"
    if word in START_WORDS:
        return "start"
    if word in HELP_WORDS:
        return "help"
    return None
