"""The per-token and per-prompt summaries a recording always keeps, in one pass over each hidden state."""
