"""Steering: concept sets, the directions found from them, adding them while the model generates, what that
achieves and costs, and the vector files other tools (llama.cpp, repeng, safetensors readers) load."""
