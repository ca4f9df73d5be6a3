"""glasschat's model side: an MLX Llama-family transformer and everything it needs.

Nothing here imports `chat/`. Importing this package first gives MLX an optimised
BLAS on Linux (see `model.blas`): it has to happen before mlx is imported.
"""

from model.blas import load_blas

load_blas()
