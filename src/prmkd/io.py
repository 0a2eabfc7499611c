"""Files written safely, JSON in and out, content hashes: the one home of each.

- `write_atomic(path, write)`: write to a private temporary name beside `path`, then rename it into place, so a
  kill never leaves a half-written file; on any failure the temporary file is removed, and an OS error (disk full,
  permission denied, a folder where a file should be) becomes a one-line `PrmkdError` naming the path.
- `write_json` / `read_json`: JSON with numpy scalars, arrays and paths made plain; a broken or missing file is a
  one-line error naming it.
- `content_hash(obj)`: the 16-hex-digit fingerprint of a JSON-able object (sorted keys), the form every run,
  teacher and pre-training fingerprint takes.
- `held(lock, log, what)`: one process at a time does a piece of work (train one run folder, embed one dataset's
  texts); the others wait for it, told who holds it.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable

try:
    import fcntl
except ImportError:  # not POSIX (Windows): no locking, as before
    fcntl = None

from .errors import PrmkdError


def os_error(path, e: OSError) -> PrmkdError:
    """A one-line error for an OS failure on `path` (what failed, the OS's own words)."""
    where = e.filename if getattr(e, "filename", None) else path
    return PrmkdError(f"{where}: {e.strerror or e}")


def write_atomic(path: Path, write: Callable[[Path], Any]) -> None:
    """`write(tmp)` to a temporary name beside `path`, then rename it into place. The temporary name is private
    to this process (two processes may write the same cache file) and keeps the suffix, which numpy's savers
    insist on. Nothing is left behind when `write` fails."""
    path = Path(path)
    tmp = path.with_suffix(f".{os.getpid()}.tmp{path.suffix}")
    try:
        write(tmp)
        tmp.replace(path)
    except BaseException as e:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        if isinstance(e, OSError):
            if e.filename in (str(tmp), tmp):  # name the file the user knows, not its temporary twin
                e.filename = str(path)
            raise os_error(path, e) from None
        if isinstance(e, RuntimeError) and "No space left" in str(e):  # torch.save wraps the OS error
            raise PrmkdError(f"{path}: No space left on device") from None
        raise


def jsonable(x):
    """`default=` of json.dumps: numpy scalars and arrays, paths."""
    import numpy as np

    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.floating):
        return float(x)
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, Path):
        return str(x)
    raise TypeError(f"not JSON serialisable: {type(x)}")


def write_json(path: Path, obj, indent: int | None = 2) -> None:
    """`obj` as JSON at `path`, atomically."""
    text = json.dumps(obj, indent=indent, default=jsonable)
    write_atomic(Path(path), lambda t: t.write_text(text, encoding="utf-8"))


def read_json(path: Path, what: str = "JSON file") -> Any:
    """The parsed JSON at `path`; a missing, unreadable or broken file is a one-line error naming it."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise PrmkdError(f"{path}: {what} not found") from None
    except UnicodeDecodeError as e:
        raise PrmkdError(f"{path}: not UTF-8 text (byte {e.start})") from None
    except OSError as e:
        raise os_error(path, e) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise PrmkdError(f"{path}, line {e.lineno}: not valid JSON ({e.msg})") from None


def content_hash(obj) -> str:
    """16 hex digits of the SHA-256 of `obj` as sorted-key JSON (values JSON cannot hold written as strings)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@contextmanager
def held(lock: Path, log: Callable[[str], Any], what: str):
    """Hold the operating system's lock (`flock`) on the file `lock` (created if needed) for the block; yields
    whether this process had to wait for another holder first. A waiting process logs one line naming the holder
    (`what`: the work, e.g. "training runs/x"); a holder that is killed releases the lock."""
    lock = Path(lock)
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a+") as f:
        waited = False
        if fcntl is not None:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.seek(0)
                log(f"{what}: under way in {f.read().strip() or 'another process'}; waiting for it to finish")
                fcntl.flock(f, fcntl.LOCK_EX)
                waited = True
            f.seek(0)
            f.truncate()
            f.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
            f.flush()
        yield waited
