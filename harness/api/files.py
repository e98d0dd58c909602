"""Reading and writing the files a user names, with every OS and decoding error turned into one sentence.

Each helper raises UserError naming the path (and the flag it came from, where given) and what is wrong with it:
it does not exist, a file stands where a folder is expected (or the reverse), its folder does not exist, it
cannot be written (permissions, a read-only or full disk), or it is not UTF-8 (with the line number). Commands
check their output paths with `check_output_file` / `check_output_dir` before any work, so a bad path is refused
before anything is computed or written.
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import yaml

from lceval.api.errors import UserError


def _named(path: Path, flag: str | None) -> str:
    return f"{flag} {path}" if flag else str(path)


def _file_ancestor(path: Path) -> Path | None:
    """The first ancestor of `path` that exists and is not a folder (the cause of ENOTDIR)."""
    for parent in reversed(path.parents):
        if parent.exists() and not parent.is_dir():
            return parent
    return None


def _missing_ancestor(path: Path) -> Path:
    """The highest ancestor of `path` that does not exist."""
    for parent in reversed(path.parents):
        if not parent.exists():
            return parent
    return path.parent


def os_error(err: OSError, path: Path, action: str = "read", flag: str | None = None) -> UserError:
    """One sentence for an OSError met while doing `action` (read, write, create) to `path`."""
    path = Path(path)
    what = _named(path, flag)
    code = err.errno
    if code == errno.ENOTDIR or isinstance(err, NotADirectoryError):
        blocker = _file_ancestor(path)
        if blocker is not None:
            return UserError(f"cannot {action} {what}: {blocker} is a file, not a folder.")
        return UserError(f"cannot {action} {what}: it is a file, not a folder.")
    if isinstance(err, IsADirectoryError):
        return UserError(f"cannot {action} {what}: it is a folder, not a file; give a file name.")
    if isinstance(err, FileExistsError):
        return UserError(f"cannot {action} {what}: a file of that name exists where a folder is expected.")
    if isinstance(err, FileNotFoundError):
        if action == "read":
            return UserError(f"{what} does not exist; check the path.")
        missing = _missing_ancestor(path)
        return UserError(f"cannot {action} {what}: the folder {missing} does not exist; create it first.")
    if isinstance(err, PermissionError):
        return UserError(f"cannot {action} {what}: permission denied.")
    if code == errno.EROFS:
        return UserError(f"cannot {action} {what}: the file system is read-only.")
    if code == errno.ENOSPC:
        return UserError(f"cannot {action} {what}: no space left on the device.")
    if code == errno.ENAMETOOLONG:
        return UserError(f"cannot {action} {what}: the name is too long.")
    return UserError(f"cannot {action} {what} ({err.strerror or type(err).__name__}).")


def decode_error(err: UnicodeDecodeError, path: Path, data: bytes, first_line: int = 1,
                 flag: str | None = None) -> UserError:
    line = first_line + data[: err.start].count(b"\n")
    byte = data[err.start] if err.start < len(data) else 0
    return UserError(f"{_named(Path(path), flag)} is not UTF-8 text (line {line} has the byte 0x{byte:02x}); "
                     "save it as UTF-8.")


# --------------------------------------------------------------------------------------------- reading


def read_bytes(path: Path, flag: str | None = None) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as err:
        raise os_error(err, path, "read", flag) from None


def read_text(path: Path, flag: str | None = None) -> str:
    """The whole file as UTF-8 text."""
    data = read_bytes(path, flag)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise decode_error(err, path, data, flag=flag) from None


def text_lines(path: Path, flag: str | None = None) -> Iterator[tuple[int, str]]:
    """(line number, line) of a UTF-8 text file, read line by line; a bad byte names its line."""
    try:
        handle = Path(path).open("rb")
    except OSError as err:
        raise os_error(err, path, "read", flag) from None
    with handle:
        try:
            for number, raw in enumerate(handle, start=1):
                try:
                    yield number, raw.decode("utf-8")
                except UnicodeDecodeError as err:
                    raise decode_error(err, path, raw, number, flag) from None
        except OSError as err:
            raise os_error(err, path, "read", flag) from None


def read_json(path: Path, flag: str | None = None, hint: str = "check the file") -> Any:
    text = read_text(path, flag)
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise UserError(f"{_named(Path(path), flag)} is not valid JSON ({err.msg} at line {err.lineno}); "
                        f"{hint}.") from None


def read_yaml(path: Path, flag: str | None = None) -> Any:
    """A YAML file, parsed safely (no object construction)."""
    text = read_text(path, flag)
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark else ""
        raise UserError(f"{_named(Path(path), flag)} is not valid YAML{at}; fix it and rerun.") from None


# --------------------------------------------------------------------------------------------- writing


def check_output_file(path: Path, flag: str | None = None) -> None:
    """Refuse, before any work, a file path that cannot be written: a folder, a missing or blocked folder above."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"cannot write {_named(path, flag)}: it is a folder, not a file; give a file name.")
    blocker = _file_ancestor(path)
    if blocker is not None:
        raise UserError(f"cannot write {_named(path, flag)}: {blocker} is a file, not a folder.")
    if not path.parent.is_dir():
        raise UserError(f"cannot write {_named(path, flag)}: the folder {_missing_ancestor(path)} does not exist; "
                        "create it first.")
    if not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise UserError(f"cannot write {_named(path, flag)}: permission denied.")


def check_output_dir(path: Path, flag: str | None = None) -> None:
    """Refuse, before any work, a folder path that is a file, lies below a file, or cannot be created."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{_named(path, flag)} is a file, not a folder; give a folder.")
    blocker = _file_ancestor(path)
    if blocker is not None:
        raise UserError(f"cannot create {_named(path, flag)}: {blocker} is a file, not a folder.")
    existing = path if path.exists() else next(p for p in path.parents if p.exists())
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"cannot write {_named(path, flag)}: permission denied in {existing}.")


def ensure_dir(path: Path, flag: str | None = None) -> Path:
    """Create the folder (and its parents), or say in one sentence why it cannot be."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{_named(path, flag)} is a file, not a folder; give a folder.")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise os_error(err, path, "create", flag) from None
    return path


def write_bytes(path: Path, data: bytes, flag: str | None = None, atomic: bool = True) -> Path:
    """Write the file; `atomic`: through a temporary file beside it, so a kill leaves the old file or the new one."""
    path = Path(path)
    target = path.with_name(f".{path.name}.tmp") if atomic else path
    try:
        target.write_bytes(data)
        if atomic:
            os.replace(target, path)
    except OSError as err:
        if atomic and target.exists():
            target.unlink(missing_ok=True)
        raise os_error(err, path, "write", flag) from None
    return path


def write_text(path: Path, text: str, flag: str | None = None, atomic: bool = True) -> Path:
    return write_bytes(path, text.encode("utf-8"), flag, atomic)


def write_json(path: Path, data: Any, flag: str | None = None, indent: int = 2) -> Path:
    return write_text(path, json.dumps(data, indent=indent, sort_keys=False, default=str) + "\n", flag)


def append_text(path: Path, text: str, flag: str | None = None) -> Path:
    try:
        with Path(path).open("a", encoding="utf-8") as handle:
            handle.write(text)
    except OSError as err:
        raise os_error(err, path, "write", flag) from None
    return Path(path)


@contextmanager
def open_text(path: Path, mode: str = "w", flag: str | None = None, newline: str | None = None) -> Iterator[IO[str]]:
    """A text file opened for writing (or appending), its OS errors as one sentence."""
    try:
        handle = Path(path).open(mode, encoding="utf-8", newline=newline)
    except OSError as err:
        raise os_error(err, path, "write", flag) from None
    with handle:
        try:
            yield handle
        except OSError as err:
            raise os_error(err, path, "write", flag) from None
