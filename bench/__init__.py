"""glasschat bench: our engine against its peers (mlx-lm, llama.cpp) in the same run.

It measures the model; it is not part of it, so it lives beside `model/`.
"""

# MLX binds its BLAS when it is first imported, so the model package (which picks and
# loads OpenBLAS, see model.blas) comes first: `python -m bench.ranks` and the other
# bench modules run in child processes of their own and import mlx themselves.
import model  # noqa: E402, F401
