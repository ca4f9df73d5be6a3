"""glasschat's model side: an MLX Llama-family transformer and everything it needs.

Nothing here imports `chat/`. Importing this package first makes MLX use the
system OpenBLAS on Linux (see `model.blas`).
"""

from model.blas import prefer_system_openblas

prefer_system_openblas()
