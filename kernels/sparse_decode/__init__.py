"""One decode step of attention restricted to chosen KV positions."""
