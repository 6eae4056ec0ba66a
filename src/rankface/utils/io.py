"""File reading and writing that never leaves a half-written output behind and names the line of bad input.

Outputs get the permissions an ordinary `open()` would give them (the umask decides), or keep those of the file
they replace; folders are replaced by renaming the old one aside first, so one complete copy always exists.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from rankface.errors import UserError

_BOM = b"\xef\xbb\xbf"


# ---------------------------------------------------------------------------------------------- reading
def read_lines(path: str | os.PathLike) -> Iterator[tuple[int, str]]:
    """Yield `(line number, text)` of a UTF-8 text file, line endings removed.

    A byte-order mark at the start (Windows editors write one) is dropped, so the first id of the file is not
    `'\\ufeffq1'`. A line that is not UTF-8 raises `UserError` naming file, line and byte instead of a bare
    `UnicodeDecodeError` from somewhere in the file.
    """
    path = Path(path)
    with path.open("rb") as handle:
        for lineno, raw in enumerate(handle, 1):
            if lineno == 1 and raw.startswith(_BOM):
                raw = raw[len(_BOM):]
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise UserError(
                    f"{path}:{lineno}: not UTF-8 text (byte 0x{raw[err.start]:02x} at byte {err.start + 1} of the "
                    "line); expected a UTF-8 file (convert it first, e.g. `iconv -f latin1 -t utf-8`)"
                ) from None
            yield lineno, text.rstrip("\n").rstrip("\r")


# ---------------------------------------------------------------------------------------------- permissions
def _umask() -> int:
    # Reading the mask means setting it; /proc shows it without the moment in which another thread would create
    # files with mask 0.
    with contextlib.suppress(OSError, ValueError, StopIteration), open("/proc/self/status", encoding="ascii") as status:
        return int(next(line for line in status if line.startswith("Umask:")).split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _ordinary_mode(folder: bool) -> int:
    """The mode `open()` / `mkdir()` would give a new file or folder: `mkstemp` and `mkdtemp` make them private."""
    return (0o777 if folder else 0o666) & ~_umask()


def give_ordinary_modes(folder: str | os.PathLike) -> Path:
    """Give `folder` and everything under it the modes `open()` / `mkdir()` would (the umask decides).

    safetensors (0.8) writes its files through a private temporary file, so a saved model's weights come out 0600
    while the config and tokenizer files beside them are 0644: another user, or a web server, can read the
    folder's every file but the weights. A file that is executable stays so (with the mode a new folder gets).
    """
    folder = Path(folder)
    file_mode, folder_mode = _ordinary_mode(folder=False), _ordinary_mode(folder=True)
    for path in (folder, *folder.rglob("*")):
        if path.is_symlink():
            continue
        executable = path.is_dir() or bool(stat.S_IMODE(path.stat().st_mode) & 0o111)
        path.chmod(folder_mode if executable else file_mode)
    return folder


# ---------------------------------------------------------------------------------------------- writing
@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """Open a temporary file beside `path`; on success rename it over `path`, on error delete it.

    The rename is atomic on POSIX, so readers see either the old file or the complete new one. The new file keeps
    the mode of the file it replaces, or gets the umask's default.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        final_mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        final_mode = _ordinary_mode(folder=False)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    binary = "b" in mode
    try:
        os.fchmod(fd, final_mode)
        with os.fdopen(fd, mode, encoding=None if binary else encoding) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write `obj` as indented JSON, atomically."""
    with atomic_write(path) as handle:
        json.dump(obj, handle, indent=2, sort_keys=False)
        handle.write("\n")


def staging_folder(target: str | os.PathLike) -> Path:
    """A new empty hidden folder beside `target` (same file system, so it can be renamed onto `target`), with the
    mode an ordinary `mkdir` would give it."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    folder.chmod(_ordinary_mode(folder=True))
    return folder


def replace_folder(new: str | os.PathLike, target: str | os.PathLike) -> Path:
    """Move the finished folder `new` to `target`, replacing what is there without ever holding no copy.

    An existing `target` is renamed aside first, then `new` is renamed into place, and only then is the old copy
    deleted. If the second rename fails, the old copy is put back. (Deleting first, as `rmtree` then `rename`
    would, loses both copies when the process dies or the rename fails in between.) A process killed between the
    two renames leaves the old copy as the hidden `.<name>.previous-*` beside `target`.
    """
    new, target = Path(new), Path(target)
    aside = None
    if target.exists() or target.is_symlink():
        aside = target.with_name(f".{target.name}.previous-{uuid.uuid4().hex[:8]}")
        os.replace(target, aside)
    try:
        os.replace(new, target)
    except BaseException:
        if aside is not None:
            os.replace(aside, target)
        raise
    if aside is not None:
        if aside.is_dir() and not aside.is_symlink():
            shutil.rmtree(aside, ignore_errors=True)
        else:
            aside.unlink()
    return target


def check_finite_weights(model, what: str = "model") -> None:
    """Raise `FloatingPointError` naming the first floating-point tensor of `model.state_dict()` that holds a NaN
    or an infinity: such weights are never written to disk (a later run would load and train on them)."""
    # A wrapper that only adds files to the folder (e.g. the face recipe's encoder + processor) holds the module.
    holder = next((m for m in (model, getattr(model, "encoder", None), getattr(model, "model", None))
                   if callable(getattr(m, "state_dict", None))), None)
    if holder is None:
        return
    import torch

    state_dict = holder.state_dict

    for name, tensor in state_dict().items():
        if torch.is_tensor(tensor) and tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise FloatingPointError(f"{what}: weight {name!r} is not finite (NaN or inf); refusing to save it")


def save_folder_atomically(model, target: str | os.PathLike) -> Path:
    """`model.save_pretrained` into a staging folder beside `target`, then put it in place with `replace_folder`.

    A model folder is then whole or absent: an interrupted save never leaves a half-written model that a later
    `from_pretrained` would load, and a failed replacement never loses the previous one. Non-finite weights are
    refused (`FloatingPointError`) before anything is written.
    """
    check_finite_weights(model, str(target))
    staging = staging_folder(target)
    try:
        model.save_pretrained(staging)
        give_ordinary_modes(staging)
        replace_folder(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return Path(target)


def save_png(fig, path: str | os.PathLike) -> Path:
    """Render a matplotlib figure to PNG in memory, close it, and write the file atomically."""
    import io

    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    try:
        if fig.get_layout_engine() is None:  # a figure that chose its layout (e.g. constrained) keeps it
            fig.tight_layout()
        fig.savefig(buffer, format="png")
    finally:
        plt.close(fig)
    path = Path(path)
    with atomic_write(path, "wb") as handle:
        handle.write(buffer.getvalue())
    return path
