"""glasschat bench: our engine against its peers (mlx-lm, llama.cpp) in the same run.

It measures the model; it is not part of it, so it lives beside `model/`.
"""
