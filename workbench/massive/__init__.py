"""Massive activations (Sun et al. 2024): detection in a recording, their ties to attention sinks, ablation,
the tables the app draws them from, and their emergence over training checkpoints."""
