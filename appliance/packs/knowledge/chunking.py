"""Splitting a document into the pieces that are embedded, one Qdrant point each.

Splitting is semantic-text-splitter's: it cuts at the largest unit that fits (paragraph, sentence, word)
and measures in characters, so a chunk never exceeds ``size`` characters and neighbours share up to
``overlap`` characters.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from semantic_text_splitter import TextSplitter


@dataclass(frozen=True)
class Chunk:
    """Chunk ``index`` of a document: ``text`` is stored in the payload, ``embed_text`` is what is embedded
    (the title followed by the text, so that a chunk is found by its document's title too)."""

    index: int
    text: str
    embed_text: str


@lru_cache(maxsize=8)
def _splitter(size: int, overlap: int) -> TextSplitter:
    return TextSplitter(size, overlap=overlap, trim=True)


def chunk_document(title: str, body: str, size: int, overlap: int) -> list[Chunk]:
    """The chunks of a document, in order; none when title and body are both blank.

    A document with a title and no body is one chunk holding the title. ``overlap`` must be below ``size``.
    """
    title = title.strip()
    pieces = [p for p in _splitter(size, overlap).chunks(body) if p.strip()] if body.strip() else []
    if not pieces:
        return [Chunk(0, title, title)] if title else []
    return [Chunk(i, piece, f"{title}\n\n{piece}" if title else piece) for i, piece in enumerate(pieces)]
