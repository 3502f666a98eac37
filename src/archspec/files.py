"""Writing output files safely: atomically, never over an existing file without force,
never over a spec the command is reading."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable, IO, Iterable

__all__ = ["OutputError", "write_atomic", "check_writable"]


class OutputError(Exception):
    """An output path that must not be written (exists, is an input, is a directory).

    ``cli`` is the message as the command line says it, where the two differ (the
    Python API's ``force=True`` is the command line's ``--force``)."""

    def __init__(self, message: str, *, cli: str | None = None):
        super().__init__(message)
        self.cli = cli or message


def write_atomic(path: str | os.PathLike, write: Callable[[IO[bytes]], None], *,
                 force: bool = False, inputs: Iterable[str | os.PathLike] = ()) -> Path:
    """Write ``path`` through ``write(fileobj)``: to a temporary file in the same folder,
    flushed to disk, then renamed over the target in one step. A crash or exception while
    writing leaves any old file untouched and no temporary file behind.

    Raises OutputError if ``path`` exists and ``force`` is False, if it is a directory, or
    if it is one of ``inputs`` (a spec being read is never overwritten, force or not).
    """
    target, folder = check_writable(path, force=force, inputs=inputs)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
    except OSError as e:  # a read-only folder, a name too long: about the target
        raise OSError(e.errno, e.strerror, str(target)) from None
    try:
        # mkstemp makes the file 0600; the result must have the mode any other tool would
        # give it: the replaced file's, or 0666 less the user's umask for a new one.
        os.chmod(tmp, _existing_mode(target) if target.exists() else 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        cause = _os_error_in(e)
        if cause is not None and (cause is not e or not cause.filename):
            # A full disk or a file-size limit, as a writer reports it (torch.save wraps
            # it in a RuntimeError): said as what it is, about the file being written.
            raise OSError(cause.errno, cause.strerror or str(cause), str(target)) from e
        raise
    return target


def _os_error_in(e: BaseException) -> OSError | None:
    """The OSError that caused ``e`` (``e`` itself, or one in its context chain)."""
    seen = 0
    while e is not None and seen < 16:
        if isinstance(e, OSError) and not isinstance(e, (FileExistsError, BrokenPipeError)):
            return e
        e, seen = e.__cause__ or e.__context__, seen + 1
    return None


def check_writable(path: str | os.PathLike, *, force: bool = False,
                   inputs: Iterable[str | os.PathLike] = ()) -> tuple[Path, Path]:
    """The checks of ``write_atomic``, alone: a command that takes long to produce its
    output (an export) runs them first, so a refusal costs nothing. Returns the target
    and its folder."""
    if not os.fspath(path).strip():
        raise OutputError("an empty output path")
    target = Path(path)
    if target.is_dir():
        raise OutputError(f"{target}: is a directory")
    for inp in inputs:
        try:
            if target.exists() and Path(inp).exists() and target.samefile(inp):
                raise OutputError(f"{target}: is an input of this command; refusing to "
                                  "overwrite it")
        except OSError:
            continue
    if (target.exists() or target.is_symlink()) and not force:  # a dangling link too
        what = "already exists" if target.exists() else \
            "already exists (a link to a missing file)"
        raise OutputError(f"{target}: {what}; pass force=True to replace it",
                          cli=f"{target}: {what}; pass --force to replace it")
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise OutputError(f"{target}: folder {folder} does not exist")
    return target, folder


def _umask() -> int:
    # Linux reports it without changing it (safe with threads); elsewhere the only way
    # to read the umask is to set it and put it straight back.
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _existing_mode(path: Path) -> int:
    return path.stat().st_mode & 0o7777
