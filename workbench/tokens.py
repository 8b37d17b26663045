"""Token texts as a reader sees them: each id decoded alone (' the', '\n'), never the tokenizer's internal
pieces (byte-level BPE's 'Ġthe', 'Ċ'), so every page, table and axis labels tokens the same way."""

from __future__ import annotations


def token_texts(tokenizer, ids) -> list[str]:
    """The text of each token id in `ids`, decoded on its own."""
    return tokenizer.batch_decode([[int(i)] for i in ids])
