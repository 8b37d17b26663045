"""DELTA's selection-layer scores: attention probabilities aggregated over heads, and top-k on them."""
