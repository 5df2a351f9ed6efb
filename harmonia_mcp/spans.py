"""Which part of a message a memory came from, and hiding that part from everything else (pure functions).

Forgetting (docs/forgetting.md): several memories can come from one message ("My name is Jason. I have a dog
called Biggie."), and later memories carry the message as conversation context. Deleting "User has a dog
called Biggie" must also hide "I have a dog called Biggie" from the source message and context that the
other memories index and show. `source_span` finds that part of the message from the memory's own words,
whichever extractor wrote it (the model gives no offsets); `redact` cuts it out of any text.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# Where a message splits into the pieces a span is built from: sentence ends, commas, semicolons, dashes, line
# breaks, and the conjunctions that join two statements ("... at AWS and I have a dog ..."). A span is a run of
# whole pieces, so it never cuts a word and usually ends at a clause boundary.
_BOUNDARY = re.compile(
    r"[.!?;:,\n\u2014\u2013]+|\s-\s|\b(?:and|but|so|because|while|although|though|whereas|plus|also)\b",
    re.IGNORECASE,
)
_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)?", re.UNICODE)
# Words that say nothing about which clause a memory came from (the first/third person rewrite changes them:
# "I have" becomes "User has"), so they are not counted.
_STOPWORDS = frozenset(
    """
    a an the and or but so of to in on at for from with by as into about over than then that this these those
    i me my mine myself we us our you your he him his she her they them their it its user user's
    is am are was were be been being have has had having do does did will would shall should can could may
    might must not no very really just also too s t
    """.split()
)
REDACTED = "\u2026"  # what a hidden span is replaced by: "…" (no token for FTS5, visible to a reader)


def _stem(word: str) -> str:
    """A light suffix strip so "called"/"calls"/"calling" and "dogs"/"dog" meet; not a real stemmer on purpose:
    it only has to make the same word agree across first and third person ("I have" / "User has")."""
    word = word.lower().removesuffix("'s")
    for suffix in ("ing", "ed", "es", "s"):
        if len(word) > len(suffix) + 2 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


def _terms(text: str) -> set[str]:
    return {_stem(word) for word in _WORD.findall(text) if word.lower() not in _STOPWORDS}


def _pieces(message: str) -> list[tuple[int, int]]:
    """(start, end) offsets of the message's pieces, whitespace trimmed, empty pieces dropped."""
    pieces: list[tuple[int, int]] = []
    start = 0
    for boundary in [*_BOUNDARY.finditer(message), None]:
        end = boundary.start() if boundary is not None else len(message)
        piece = message[start:end]
        if piece.strip():
            left = start + len(piece) - len(piece.lstrip())
            pieces.append((left, left + len(piece.strip())))
        if boundary is not None:
            start = boundary.end()
    return pieces


def source_span(message: str, content: str, entities: Iterable[str] = ()) -> str | None:
    """The part of `message` that the memory `content` (and its `entities`) came from, or None if none is found.

    The message is cut into pieces at sentence, clause and conjunction boundaries; the answer is the run of
    consecutive pieces whose content words best match the memory's (F1 of the two word sets, after dropping
    function words and a light suffix strip), the shortest run on a tie. The text is returned as it stands in
    the message, so `redact` finds it again. None when no piece shares a content word with the memory.
    """
    wanted = _terms(content) | {term for entity in entities for term in _terms(entity)}
    if not wanted:
        return None
    pieces = _pieces(message)
    piece_terms = [_terms(message[start:end]) for start, end in pieces]
    best: tuple[float, int, int, int] | None = None  # (f1, -length, first piece, last piece)
    for first in range(len(pieces)):
        found: set[str] = set()
        for last in range(first, len(pieces)):
            found |= piece_terms[last]
            shared = len(found & wanted)
            if shared == 0:
                continue
            f1 = 2 * shared / (len(found) + len(wanted))
            candidate = (f1, -(pieces[last][1] - pieces[first][0]), first, last)
            if best is None or candidate[:2] > best[:2]:
                best = candidate
    if best is None:
        return None
    return message[pieces[best[2]][0] : pieces[best[3]][1]]


def redact(text: str | None, spans: Iterable[str]) -> str | None:
    """`text` with every occurrence of each of `spans` replaced by "…" (longest span first); None stays None."""
    if text is None:
        return None
    for span in sorted({span for span in spans if span}, key=len, reverse=True):
        text = text.replace(span, REDACTED)
    return text
