"""AnchorAttention's prefill: causal attention over an anchor region plus selected key columns."""
