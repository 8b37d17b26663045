"""DeltaNet's delta rule (and its gated variant): chunked WY/UT forward and the recurrent form."""
