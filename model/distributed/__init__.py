"""Running one model across a group of processes (MLX ring backend): the split (tensor or pipeline), the hosts, the leader and its followers."""
