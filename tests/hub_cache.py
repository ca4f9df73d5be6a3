"""A Hugging Face Hub cache written by a test, in the layout huggingface_hub itself writes (no network)."""

import hashlib
import os
import threading
from pathlib import Path

from model.loading.hub import DownloadCancelled

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def write_cached_repo(cache: Path, repo_id: str, files: dict[str, bytes], commit: str = COMMIT, kind: str = "models"):
    """blobs/<sha256> with the contents, snapshots/<commit>/<name> linking to them, refs/main naming the commit."""
    repo = cache / f"{kind}--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        link = snapshot / name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(os.path.relpath(blob, snapshot))
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return snapshot


class SteppedDownload:
    """Stands in for snapshot_download: bytes reported through the tqdm class it is given, one chunk each time
    `allow` is called; it stops as the real one does, when a bar raises (the download was cancelled)."""

    def __init__(self, cache: Path, repo_id: str, files: dict[str, bytes], chunks: int = 4, chunk: int = 1000):
        self.cache, self.repo_id, self.files = cache, repo_id, files
        self.chunks, self.chunk = chunks, chunk
        self.allowed = 0
        self.changed = threading.Condition()
        self.stopped = threading.Event()

    def allow(self, n: int = 1) -> None:
        with self.changed:
            self.allowed += n
            self.changed.notify_all()

    def __call__(self, repo_id, allow_patterns, cache_dir, tqdm_class=None, local_files_only=False):
        assert repo_id == self.repo_id and Path(cache_dir) == self.cache and not local_files_only
        files = tqdm_class(total=len(self.files), desc="Fetching files")  # a file count: not bytes
        bar = tqdm_class(total=self.chunks * self.chunk, unit="B", unit_scale=True)
        try:
            for i in range(self.chunks):
                with self.changed:
                    while self.allowed <= i:
                        self.changed.wait(0.05)
                        bar.update(0)  # raises once cancelled, as the next chunk would
                bar.update(self.chunk)
        except DownloadCancelled:
            self.stopped.set()
            raise
        files.update(len(self.files))
        return write_cached_repo(Path(cache_dir), repo_id, self.files)


def tiny_gguf(path: Path, arch: str, file_type=None, tensors: dict | None = None) -> Path:
    """A small GGUF written by the `gguf` package (llama.cpp's own writer): a header and a few tensors."""
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_name(f"tiny {arch}")
    if file_type is not None:
        writer.add_file_type(int(file_type))
    writer.add_block_count(1)
    tokens = [f"t{i}" for i in range(64)]  # a vocabulary array the header reader must skip
    writer.add_token_list(tokens)
    for name, (array, kind) in (tensors or {"output_norm.weight": (np.ones(32, np.float32), None)}).items():
        if kind is None:
            writer.add_tensor(name, array)
        else:
            writer.add_tensor(name, gguf.quants.quantize(array, kind), raw_dtype=kind)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
