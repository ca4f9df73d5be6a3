"""Running one model across a group of processes (MLX ring backend): the split, the shards, the leader and its followers."""
