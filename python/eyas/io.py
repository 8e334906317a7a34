"""One atomic writer for every file eyas writes: a temporary file in the target's directory, then a rename,
so a reader (or a crash) never sees a half-written file."""
from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, TypeVar

T = TypeVar("T")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp"):
    """Yield a temporary path beside ``path``; rename it to ``path`` if the block succeeds, delete it otherwise.
    ``suffix`` keeps an extension that a writer infers the format from (e.g. ``.png`` for matplotlib)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.fchmod(fd, _new_file_mode())  # mkstemp's 0600 would outlive the rename: files get open()'s mode
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _new_file_mode() -> int:
    """The mode ``open()`` gives a new file: 0666 less the process umask (which can only be read by setting it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write(path: str | os.PathLike, data: bytes | str) -> Path:
    """Write ``data`` (bytes, or text as UTF-8) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)
    return Path(path)


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = 1) -> Path:
    """``json.dumps(obj)`` to ``path`` atomically; tensors become lists and paths strings."""
    return atomic_write(path, json.dumps(obj, indent=indent, default=_json_default))


def atomic_torch_save(path: str | os.PathLike, obj: Any) -> Path:
    """``torch.save(obj)`` to ``path`` atomically."""
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return Path(path)


def atomic_torch_save_keeping_previous(path: str | os.PathLike, previous: str | os.PathLike, obj: Any) -> Path:
    """``torch.save(obj)`` to ``path`` atomically; the file it replaces becomes ``previous``, so the last two
    complete saves are on disk (between the two renames only ``previous``: readers fall back to it)."""
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
        if Path(path).is_file():
            os.replace(path, previous)
    return Path(path)


def read_with_fallback(path: Path, previous: Path, read: Callable[[Path], T], error: type[Exception],
                       notice: Callable[[Exception, T], str]) -> T:
    """``read(path)``; when it raises ``error`` (missing, truncated, corrupt) and ``previous`` exists,
    ``read(previous)`` with the one-line ``notice(error, value)`` on stderr (see `atomic_torch_save_keeping_previous`)."""
    try:
        return read(path)
    except error as latest:
        if not previous.is_file():
            raise
        value = read(previous)
        print(notice(latest, value), file=sys.stderr)
        return value


def atomic_with(path: str | os.PathLike, write: Callable[[Path], None], suffix: str = ".tmp") -> Path:
    """``write(tmp_path)`` then rename: for writers that take a path (h5py, matplotlib)."""
    with atomic_path(path, suffix) as tmp:
        write(tmp)
    return Path(path)


NOT_TORCH = "not a torch checkpoint (empty, truncated, corrupt or another format)"


def read_torch_file(path: str | os.PathLike, error: type[Exception], what: str) -> Any:
    """``torch.load(path, weights_only=True)``: tensors, numbers, strings and containers of them only, so a file
    whose unpickling would build anything else (and so could run code) is refused before anything in it runs.
    Every failure is ``error`` with one line naming the file: ``what`` says what it should have been."""
    import pickle

    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # torch names the global a file would build (and so could run code through); junk bytes name none
        culprit = next((line.strip() for line in str(e).splitlines() if "GLOBAL" in line), None)
        if culprit is not None:
            raise error(f"refusing {path}: not a plain checkpoint of tensors and numbers ({culprit[:120]}); eyas "
                        f"reads {what} files without running code") from e
        raise error(f"cannot read {what} {path}: {NOT_TORCH} (UnpicklingError)") from e
    except OSError as e:
        raise error(f"cannot read {what} {path}: {e.strerror or first_line(e)}") from e
    except Exception as e:  # noqa: BLE001 - torch raises many types (EOFError, RuntimeError, ...) for bad bytes
        raise error(f"cannot read {what} {path}: {NOT_TORCH} ({type(e).__name__})") from e


def first_line(e: BaseException) -> str:
    """An exception's message in one line (at most 200 characters): what a one-line error quotes of it."""
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:200]


def _json_default(o):
    import torch

    if isinstance(o, torch.Tensor):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(type(o).__name__)
