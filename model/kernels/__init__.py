"""Native kernels built with the package (optional: each has a pure-MLX fallback)."""
