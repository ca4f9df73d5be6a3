"""A follower rank: load the model, keep this rank's share, run what rank 0 announces, exit on STOP.

Started by `group.LocalGroup`, here or over ssh (or by `mlx.launch`, which sets the same MLX_RANK
and MLX_HOSTFILE) with the model options rank 0 was given.
"""

import argparse
import os
import sys
import threading
import time

from model.distributed.group import POLL_S


def _exit_with_parent() -> None:
    """Rank 0 gone (killed, crashed): nothing will ever be announced, so end rather than wait forever."""
    parent = os.getppid()
    while os.getppid() == parent:
        time.sleep(POLL_S)
    os._exit(4)


def main() -> int:
    parser = argparse.ArgumentParser(prog="glasschat-follower")
    parser.add_argument("--model")
    parser.add_argument("--weights", default="auto")
    parser.add_argument("--pipeline", action="store_true")
    parser.add_argument("--memory", help="pipeline: each rank's host memory, comma-separated (the split follows it)")
    args = parser.parse_args()
    threading.Thread(target=_exit_with_parent, daemon=True).start()

    import mlx.core as mx

    from model.distributed.group import shard_loaded
    from model.distributed.mirror import follow
    from model.errors import ModelError
    from model.loading.loader import load_model

    try:
        loaded = load_model(args.model, args.weights)
        group = mx.distributed.init(backend="ring", strict=True)
        memory = [float(m) for m in args.memory.split(",")] if args.memory else None
        _, place = shard_loaded(loaded, group, args.pipeline, memory)
    except ModelError as exc:
        print(f"glasschat (rank {os.environ.get('MLX_RANK')}): {exc}", file=sys.stderr, flush=True)
        return 2
    except RuntimeError as exc:  # MLX could not join the ring (an address that is not this host's, a closed port)
        print(f"glasschat (rank {os.environ.get('MLX_RANK')}): could not join the group: {exc}", file=sys.stderr)
        return 2
    follow(loaded.model, group, place)
    return 0


if __name__ == "__main__":
    sys.exit(main())
