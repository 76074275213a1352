"""A resumable, crash-safe result store.

Layout under ``root``::

    cases/<key>.json     one finished case (atomic: written to a temp file, fsynced, renamed);
                         the key includes the stopping rule
    blocks/<key>.jsonl   finished blocks of a case, one JSON line each, fsynced; the key does
                         not include the stopping rule, so a later run asking for more precision
                         starts from the blocks already computed

A run killed at any moment leaves only whole case files and at most one torn last line per block
log; :meth:`ResultStore.load_blocks` skips a torn line, so a resumed run recomputes at most the
blocks that were in flight. Keys hash everything that determines a case's numbers (claim, sampler,
parameters, seed, block size), so a store never mixes results of different configurations.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path

from .estimators import Moments

__all__ = ["ResultStore", "atomic_write_text", "exclusive_lock"]


@contextlib.contextmanager
def exclusive_lock(path: Path):
    """An exclusive ``flock`` on ``path`` (created if missing) for the ``with`` block: two
    processes sharing a cache never compute one entry twice. No-op where ``fcntl`` is missing."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old file or the new one, never a part."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file normal permissions
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class ResultStore:
    """Finished cases and finished blocks of one or more sweeps, keyed by case key."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        (self.root / "cases").mkdir(parents=True, exist_ok=True)
        (self.root / "blocks").mkdir(parents=True, exist_ok=True)

    def _case_path(self, key: str) -> Path:
        return self.root / "cases" / f"{key}.json"

    def _block_path(self, key: str) -> Path:
        return self.root / "blocks" / f"{key}.jsonl"

    def load_case(self, key: str) -> dict | None:
        path = self._case_path(key)
        if not path.exists():
            return None
        return json.loads(path.read_text())

    def save_case(self, key: str, record: dict) -> None:
        atomic_write_text(self._case_path(key), json.dumps(record, indent=1, sort_keys=True))

    def load_blocks(self, key: str) -> dict[int, Moments]:
        """Finished blocks of an unfinished case; a torn (half-written) last line is ignored."""
        path = self._block_path(key)
        blocks: dict[int, Moments] = {}
        if not path.exists():
            return blocks
        text = path.read_text()
        kept = []
        for line in text.splitlines(keepends=True):
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a kill; that block is simply recomputed
            if not line.endswith("\n"):
                continue
            blocks[int(entry["block"])] = Moments.from_json(entry["moments"])
            kept.append(line)
        if "".join(kept) != text:  # drop the torn tail so later appends start on a fresh line
            atomic_write_text(path, "".join(kept))
        return blocks

    def append_block(self, key: str, block: int, moments: Moments) -> None:
        line = json.dumps({"block": block, "moments": moments.to_json()}) + "\n"
        with open(self._block_path(key), "a") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())
