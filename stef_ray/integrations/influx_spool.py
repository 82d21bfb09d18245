"""The InfluxDB sink's local spool: line-protocol segment files that hold points until the server has
acknowledged them, safe against a crash of the writer and shared by several processes on one folder.

Layout, in `spool_dir`:
  <ns>-<pid>-<rand>.active   the segment this process appends to; it holds an flock on it while alive
  <ns>-<pid>-<rand>.lp       sealed segments, delivered oldest first, rewritten atomically as batches go
  rejected/                  segments the server refused as malformed (HTTP 400), kept for inspection
  .deliver.lock              flock taken by whichever process delivers (`stef_ray.integrations.influx`),
                             so two never send the same lines
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
import uuid
from pathlib import Path

logger = logging.getLogger(__name__)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Spool:
    """Append-only segment files; safe against crashes and shared by several processes."""

    def __init__(self, directory: Path, *, fsync: bool = True):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.fsync = fsync
        self._lock = threading.Lock()
        self._active_fd: int | None = None
        self._active_path: Path | None = None
        self._active_lines = 0

    def append(self, lines: list[str]) -> None:
        """Append complete lines to this process's active segment; durable on return if fsync is on."""
        if not lines:
            return
        payload = "".join(line + "\n" for line in lines).encode()
        with self._lock:
            if self._active_fd is None:
                self._open_active()
            os.write(self._active_fd, payload)
            if self.fsync:
                os.fsync(self._active_fd)
            self._active_lines += len(lines)

    def _open_active(self) -> None:
        stem = f"{time.time_ns():020d}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        # Created under a name the orphan scan ignores, locked, then renamed: no other process can
        # mistake a brand-new segment for the leftover of a dead one.
        fresh = self.directory / f"{stem}.new"
        fd = os.open(fresh, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
        self._active_path = self.directory / f"{stem}.active"
        os.rename(fresh, self._active_path)
        if self.fsync:
            _fsync_dir(self.directory)
        self._active_fd = fd
        self._active_lines = 0

    def seal(self) -> None:
        """Close this process's active segment so it can be delivered; the next append opens a new one."""
        with self._lock:
            if self._active_fd is None or self._active_lines == 0:
                return
            os.rename(self._active_path, self._active_path.with_suffix(".lp"))
            if self.fsync:
                _fsync_dir(self.directory)
            os.close(self._active_fd)
            self._active_fd, self._active_path, self._active_lines = None, None, 0

    def seal_orphans(self) -> int:
        """Seal active segments whose writer died (its flock is gone). Returns how many."""
        sealed = 0
        for path in sorted(self.directory.glob("*.active")):
            if path == self._active_path:
                continue
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            try:
                os.rename(path, path.with_suffix(".lp"))
                sealed += 1
            except FileNotFoundError:
                pass
            finally:
                os.close(fd)
        return sealed

    def sealed_segments(self) -> list[Path]:
        return sorted(self.directory.glob("*.lp"))

    def pending_lines(self) -> int:
        """Lines not yet delivered: sealed segments plus this process's active one."""
        with self._lock:
            active = self._active_lines
        return active + sum(len(self.read_segment(path)) for path in self.sealed_segments())

    @staticmethod
    def read_segment(path: Path) -> list[str]:
        """The complete lines of a segment; a half-written last line (a crash mid-write) is dropped."""
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return []
        text = raw.decode("utf-8", errors="replace")
        lines = text.split("\n")
        if lines[-1]:
            logger.warning("spool segment %s ends in a half-written line; ignoring it: %r", path.name, lines[-1][:80])
        return [line for line in lines[:-1] if line]

    def replace_segment(self, path: Path, remaining: list[str]) -> None:
        """Atomically leave only `remaining` in a sealed segment (delete it when empty)."""
        if not remaining:
            path.unlink(missing_ok=True)
        else:
            tmp = path.with_suffix(".tmp")
            with open(tmp, "wb") as handle:
                handle.write("".join(line + "\n" for line in remaining).encode())
                handle.flush()
                if self.fsync:
                    os.fsync(handle.fileno())
            os.replace(tmp, path)
        if self.fsync:
            _fsync_dir(self.directory)

    def reject(self, path: Path) -> Path:
        rejected = self.directory / "rejected"
        rejected.mkdir(exist_ok=True)
        target = rejected / path.name
        os.replace(path, target)
        return target

    def close(self) -> None:
        self.seal()
