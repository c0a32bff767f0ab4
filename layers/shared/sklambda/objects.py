"""Object storage with conditional writes: one interface, two backends (a local folder here, S3 in `sklambda.aws`).

The model store is written once against this interface, so the local folder and S3 give the same guarantees:
`put(..., if_none_match=True)` never overwrites, `put(..., if_match=etag)` is a compare-and-swap, and
`get_if_changed` is the cheap conditional read that serving uses to notice an alias move. Which backend a location
names is `sklambda.locations`' business: this module knows nothing of S3 (sklambda.aws imports it, not the reverse).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from sklambda.errors import NotFound, PreconditionFailed


@dataclass(frozen=True)
class Blob:
    data: bytes
    etag: str


class ObjectStore(Protocol):
    """Keys are '/'-separated paths relative to the store's root."""

    def uri(self, key: str = "") -> str: ...

    def get(self, key: str) -> Blob:
        """Raise NotFound when the key does not exist."""
        ...

    def get_if_changed(self, key: str, etag: str | None) -> Blob | None:
        """None when the object still has `etag`; raise NotFound when it does not exist."""
        ...

    def put(self, key: str, data: bytes, *, if_match: str | None = None, if_none_match: bool = False) -> str:
        """Write and return the new etag. if_none_match: only create; if_match: only replace that etag.

        Raise PreconditionFailed when the condition does not hold.
        """
        ...

    def list(self, prefix: str) -> list[str]:
        """All keys under prefix (recursive), sorted."""
        ...

    def delete(self, key: str) -> None: ...


@runtime_checkable
class SizedListing(Protocol):
    """A store that can list object sizes without reading the objects (both backends here can)."""

    def sizes(self, prefix: str) -> dict[str, int]:
        """Size in bytes of every key under prefix (recursive)."""
        ...


def _etag_of(data: bytes) -> str:
    # S3 uses MD5 for single-part uploads; any content hash gives the same compare-and-swap semantics here.
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


class LocalObjects:
    """A folder on disk. Writes are atomic (temp file + rename); conditional writes hold an exclusive lock,
    so concurrent processes on one machine get the same compare-and-swap behaviour as S3."""

    _LOCK_DIR = ".locks"

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser().resolve()

    def uri(self, key: str = "") -> str:
        return str(self.root / key) if key else str(self.root)

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root != path and self.root not in path.parents:
            raise ValueError(f"key escapes the store root: {key!r}")
        return path

    def get(self, key: str) -> Blob:
        try:
            data = self._path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise NotFound(f"{self.uri(key)} does not exist") from None
        return Blob(data, _etag_of(data))

    def get_if_changed(self, key: str, etag: str | None) -> Blob | None:
        blob = self.get(key)
        return None if etag is not None and blob.etag == etag else blob

    @contextlib.contextmanager
    def _locked(self, key: str) -> Iterator[None]:
        lock_dir = self.root / self._LOCK_DIR
        lock_dir.mkdir(parents=True, exist_ok=True)
        lock_path = lock_dir / (hashlib.sha256(key.encode()).hexdigest() + ".lock")
        with open(lock_path, "a+b") as lock_file:
            fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock_file.fileno(), fcntl.LOCK_UN)

    def put(self, key: str, data: bytes, *, if_match: str | None = None, if_none_match: bool = False) -> str:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._locked(key):
            exists = path.is_file()
            if if_none_match and exists:
                raise PreconditionFailed(f"{self.uri(key)} already exists")
            if if_match is not None:
                if not exists:
                    raise PreconditionFailed(f"{self.uri(key)} does not exist (expected etag {if_match})")
                current = _etag_of(path.read_bytes())
                if current != if_match:
                    raise PreconditionFailed(f"{self.uri(key)} changed (etag {current}, expected {if_match})")
            fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as tmp:
                    tmp.write(data)
                    tmp.flush()
                    os.fsync(tmp.fileno())
                os.replace(tmp_name, path)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp_name)
                raise
        return _etag_of(data)

    def list(self, prefix: str) -> list[str]:
        base = self._path(prefix) if prefix else self.root
        search_root = base if base.is_dir() else base.parent
        if not search_root.is_dir():
            return []
        keys = []
        for path in search_root.rglob("*"):
            if not path.is_file() or path.name.startswith("."):
                continue
            key = path.relative_to(self.root).as_posix()
            if key.startswith(prefix) and not key.startswith(self._LOCK_DIR + "/"):
                keys.append(key)
        return sorted(keys)

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path(key).unlink()

    def sizes(self, prefix: str) -> dict[str, int]:
        return {key: self._path(key).stat().st_size for key in self.list(prefix)}
