"""The one atomic-write helper: files and folders appear whole or not at all; modes follow umask.

Every file the project writes is first written to a temporary sibling (`.<name>.<random>.tmp`)
and moved into place with os.replace, so a reader never sees half a file and a failed write
leaves the old file intact and no temporary behind. tempfile creates its files 0600 and its
folders 0700; here they get the modes a plain open()/mkdir() would give: files
0o666 & ~umask, folders 0o777 & ~umask (0644/0755 under the usual umask 022), so other users
and workers on shared storage can read checkpoints, labels and feature stores.

    atomic_write(path, data)        bytes or str (utf-8) -> path
    with atomic_path(path) as tmp:  write tmp yourself (np.save, pq.write_table, torch.save)
    with atomic_dir(path) as tmp:   fill a folder; it replaces `path` as a whole on success
    replace_dir(src, dst)           move a finished folder into place (replacing dst)
    write_json(path, data)          pretty, key-sorted JSON; read_json(path) reads it back

No mlflow, ray or torch here (the library's import boundary).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator


def current_umask() -> int:
    """The process umask, read without changing it where /proc allows (thread-safe there)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # no /proc (macOS): swap and restore at once
    os.umask(mask)
    return mask


def file_mode() -> int:
    """Mode of a newly written file: 0o666 & ~umask (0644 under umask 022)."""
    return 0o666 & ~current_umask()


def dir_mode() -> int:
    """Mode of a newly written folder: 0o777 & ~umask (0755 under umask 022)."""
    return 0o777 & ~current_umask()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary file path next to `path`; on success it gets the umask's file mode and
    is os.replace'd onto `path`. On any exception the temporary is removed, `path` untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, file_mode())  # the writer may have recreated it; chmod the final file
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(path: str | os.PathLike, data: bytes | str, encoding: str = "utf-8") -> Path:
    """Atomically write `data` (str is encoded with `encoding`) to `path`; returns the path."""
    if isinstance(data, str):
        payload = data.encode(encoding)
    elif isinstance(data, (bytes, bytearray, memoryview)):
        payload = bytes(data)
    else:
        raise TypeError(f"atomic_write({path}): data must be bytes or str, "
                        f"got {type(data).__name__}")
    with atomic_path(path) as tmp:
        tmp.write_bytes(payload)
    return Path(path)


def replace_dir(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Give folder `src` the umask's folder mode and move it to `dst`, replacing a folder there.

    An existing `dst` is first renamed aside and removed after the move, so `dst` is always
    either the old or the new folder, never a mix.
    """
    src, dst = Path(src), Path(dst)
    os.chmod(src, dir_mode())
    if dst.exists():
        old = dst.with_name(f".{dst.name}.old-{os.getpid()}-{os.urandom(3).hex()}")
        os.replace(dst, old)
        os.replace(src, dst)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(src, dst)
    return dst


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary folder next to `path`; on success it replaces `path` as a whole
    (replace_dir). On any exception the temporary folder is removed and `path` is untouched.

    Files and sub-folders created inside with open()/mkdir()/np.save already follow the umask;
    use atomic_path/atomic_write only for files that need to be atomic on their own.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        replace_dir(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_json(path: str | os.PathLike, data: Any) -> Path:
    """Atomically write pretty, key-sorted JSON (str() for what JSON lacks)."""
    return atomic_write(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text())
