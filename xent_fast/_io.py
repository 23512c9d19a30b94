"""Arrays in ``.npy`` / ``.npz`` files read in row chunks, with bounded memory, and per-row
results written out the same way (the ``xent-fast score`` command's input and output).

A ``.npy`` file, or an ``.npz`` member stored without compression (what ``numpy.savez``
writes), is memory-mapped; the pages of the rows already scored are handed back to the
kernel (``madvise(MADV_DONTNEED)``), so the resident memory stays that of one chunk
however large the file: a mapped file's pages would otherwise stay resident, and count
in the process's RSS, until the system runs short of memory. A compressed member
(``numpy.savez_compressed``) is decompressed chunk by chunk as it is read.
"""

from __future__ import annotations

import mmap
import os
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import IO, Any, BinaryIO

import numpy as np
from numpy.lib import format as npy_format

_PAGE = mmap.PAGESIZE
_HAS_MADVISE = hasattr(mmap.mmap, "madvise") and hasattr(mmap, "MADV_DONTNEED")


class InputError(Exception):
    """A problem with an input or output file, reported to the user as it is."""


def split_spec(spec: str) -> tuple[str, str | None]:
    """``"file.npz:name"`` -> ("file.npz", "name"); anything else -> (spec, None)."""
    head, sep, key = spec.rpartition(":")
    if sep and head.lower().endswith(".npz") and key:
        return head, key
    return spec, None


def _read_header(fp: IO[bytes], what: str) -> tuple[tuple[int, ...], bool, np.dtype]:
    try:
        version = npy_format.read_magic(fp)
        if version == (1, 0):
            return npy_format.read_array_header_1_0(fp)
        if version == (2, 0):
            return npy_format.read_array_header_2_0(fp)
        return npy_format._read_array_header(fp, version)  # type: ignore[attr-defined, no-any-return]
    except (ValueError, OSError, EOFError) as exc:
        raise InputError(f"{what} is not a valid .npy array: {exc}") from None


class ArrayFile:
    """One array of a ``.npy`` file or an ``.npz`` member, read by rows in order.

    ``rows(start, stop)`` returns rows of the array seen as ``(n_rows,) + row_shape``
    (``row_shape`` is ``shape[-1:]`` or ``()``); ``release(start, stop)`` hands the pages
    of rows already used back to the system.
    """

    def __init__(self, spec: str, role: str, default_keys: tuple[str, ...]) -> None:
        path, key = split_spec(spec)
        self.path = path
        if not os.path.exists(path):
            raise InputError(f"{role} file not found: {path}")
        if os.path.isdir(path):
            raise InputError(f"{role} path is a directory: {path}")
        self._mm: mmap.mmap | None = None
        self._stream: IO[bytes] | None = None
        self._zip: zipfile.ZipFile | None = None
        self._view: np.ndarray | None = None
        self._pos = 0
        self._width = 1
        try:
            if zipfile.is_zipfile(path):
                self._open_npz(path, key, role, default_keys)
            else:
                if key is not None:
                    raise InputError(f"{role}: {path} is not an .npz archive, so it has no "
                                     f"array {key!r}")
                self.name = path
                with open(path, "rb") as f:
                    self.shape, self.fortran, self.dtype = _read_header(f, f"{role} file {path}")
                    self._offset = f.tell()
                self._map(path)
        except BaseException:
            self.close()
            raise
        if self.dtype.hasobject:
            raise InputError(f"{role} {self.name} holds Python objects (dtype {self.dtype}); "
                             "only numeric arrays can be scored")
        if self.fortran and len(self.shape) > 2:
            raise InputError(f"{role} {self.name} is stored in Fortran order with "
                             f"{len(self.shape)} dimensions; save it in C order "
                             "(numpy.ascontiguousarray)")

    def _open_npz(self, path: str, key: str | None, role: str,
                  default_keys: tuple[str, ...]) -> None:
        self._zip = zipfile.ZipFile(path)
        names = {n[:-4]: n for n in self._zip.namelist() if n.endswith(".npy")}
        if key is None:
            found = [k for k in default_keys if k in names]
            if found:
                key = found[0]
            elif len(names) == 1:
                key = next(iter(names))
            else:
                raise InputError(
                    f"{role}: {path} holds the arrays {sorted(names)}; name the one to use "
                    f"as {path}:NAME (by default one of {list(default_keys)} is taken)")
        if key not in names:
            raise InputError(f"{role}: {path} has no array {key!r} (it holds {sorted(names)})")
        self.name = f"{path}:{key}"
        info = self._zip.getinfo(names[key])
        if info.compress_type == zipfile.ZIP_STORED and not info.flag_bits & 0x1:
            # The member's bytes are a plain .npy file inside the archive: map it there.
            with open(path, "rb") as f:
                f.seek(info.header_offset)
                local = f.read(30)
                if local[:4] != b"PK\x03\x04":
                    raise InputError(f"{role}: {path} is not a readable .npz archive")
                start = (info.header_offset + 30 + int.from_bytes(local[26:28], "little")
                         + int.from_bytes(local[28:30], "little"))
                f.seek(start)
                self.shape, self.fortran, self.dtype = _read_header(f, f"{role} {self.name}")
                self._offset = f.tell()
            self._zip.close()
            self._zip = None
            self._map(path)
        else:
            stream = self._stream = self._zip.open(info)
            self.shape, self.fortran, self.dtype = _read_header(stream, f"{role} {self.name}")
            if self.fortran and len(self.shape) > 1:
                raise InputError(f"{role} {self.name} is compressed and stored in Fortran "
                                 "order, so it cannot be read by rows; save it in C order")

    def _map(self, path: str) -> None:
        size = int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize
        if os.path.getsize(path) < self._offset + size:
            raise InputError(f"{self.name} is truncated: the header announces shape "
                             f"{self.shape} but the file is too short")
        if size == 0:
            self._view = np.empty(self.shape, self.dtype)
            return
        with open(path, "rb") as f:
            self._mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        if _HAS_MADVISE and hasattr(mmap, "MADV_SEQUENTIAL"):
            self._mm.madvise(mmap.MADV_SEQUENTIAL)
        self._view = np.ndarray(self.shape, self.dtype, buffer=self._mm, offset=self._offset,
                                order="F" if self.fortran else "C")

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def data_offset(self) -> int | None:
        """Where the array's data starts in ``path``, or None if it is compressed."""
        return None if self._stream is not None else self._offset

    def rows(self, start: int, stop: int, row_shape: tuple[int, ...]) -> np.ndarray:
        """Rows start..stop-1 of the array seen as ``(-1,) + row_shape`` (read-only)."""
        self._width = int(np.prod(row_shape, dtype=np.int64))
        if self._view is not None:
            view = self._view
            if view.ndim != 1 + len(row_shape) or view.shape[1:] != row_shape:
                view = view.reshape((-1,) + row_shape)     # C order: no copy
            return view[start:stop]
        assert self._stream is not None and start == self._pos, "rows are read in order"
        nbytes = (stop - start) * self._width * self.dtype.itemsize
        data = self._stream.read(nbytes)
        if len(data) != nbytes:
            raise InputError(f"{self.name} is truncated")
        self._pos = stop
        return np.frombuffer(data, self.dtype).reshape((stop - start,) + row_shape)

    def _byte_range(self, start: int, stop: int) -> tuple[int, int]:
        # Bytes of rows start..stop-1 as rows() last cut them; (0, 0) where rows are not
        # byte ranges (Fortran order).
        if self.fortran and self.ndim > 1:
            return 0, 0
        row_bytes = self._width * self.dtype.itemsize
        return self._offset + start * row_bytes, self._offset + stop * row_bytes

    def release(self, start: int, stop: int) -> None:
        """Hand back the pages that hold only rows before ``stop`` (from ``start``)."""
        if self._mm is None or not _HAS_MADVISE:
            return
        a, b = self._byte_range(start, stop)
        a, b = (a // _PAGE) * _PAGE, (b // _PAGE) * _PAGE
        if b > a:
            self._mm.madvise(mmap.MADV_DONTNEED, a, b - a)

    def prefetch(self, start: int, stop: int) -> None:
        """Ask the system to start reading rows start..stop-1 in the background."""
        if self._mm is None or not _HAS_MADVISE or not hasattr(mmap, "MADV_WILLNEED"):
            return
        a, b = self._byte_range(start, stop)
        a = (a // _PAGE) * _PAGE
        b = min(b, len(self._mm))
        if b > a:
            self._mm.madvise(mmap.MADV_WILLNEED, a, b - a)

    def close(self) -> None:
        self._view = None
        for obj in (self._stream, self._zip, self._mm):
            if obj is not None:
                try:
                    obj.close()
                except (BufferError, OSError):  # a view still exported: freed with it
                    pass
        self._stream = self._zip = self._mm = None

    def __enter__(self) -> ArrayFile:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class NpzWriter:
    """Writes named arrays of known shape into an ``.npz`` file chunk by chunk.

    Each array goes to a temporary ``.npy`` file beside the output (appended to with
    plain writes, so nothing stays resident), and ``close`` packs them into the
    archive, as ``numpy.savez`` would (uncompressed; ``numpy.load`` reads it).
    """

    def __init__(self, path: str | os.PathLike[str], arrays: dict[str, tuple[tuple[int, ...], np.dtype]]) -> None:
        self.path = Path(path)
        parent = self.path.resolve().parent
        if not parent.is_dir():
            raise InputError(f"cannot write {self.path}: folder {parent} does not exist")
        try:
            self._tmp = Path(tempfile.mkdtemp(prefix=".xent_fast_", dir=parent))
        except OSError as exc:
            raise InputError(f"cannot write {self.path}: {exc}") from None
        self._files: dict[str, BinaryIO] = {}
        self._dtypes = {}
        for name, (shape, dtype) in arrays.items():
            f = open(self._tmp / f"{name}.npy", "wb")
            self._files[name] = f
            self._dtypes[name] = np.dtype(dtype)
            header = {"descr": npy_format.dtype_to_descr(np.dtype(dtype)),
                      "fortran_order": False, "shape": tuple(shape)}
            try:
                npy_format.write_array_header_1_0(f, header)
            except ValueError:
                npy_format.write_array_header_2_0(f, header)

    def write(self, chunk: dict[str, np.ndarray]) -> None:
        for name, f in self._files.items():
            f.write(np.ascontiguousarray(chunk[name], self._dtypes[name]).tobytes())

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        tmp_out = self._tmp / "out.npz"
        with zipfile.ZipFile(tmp_out, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
            for name in self._files:
                zf.write(self._tmp / f"{name}.npy", arcname=f"{name}.npy")
        os.replace(tmp_out, self.path)
        shutil.rmtree(self._tmp, ignore_errors=True)

    def abort(self) -> None:
        for f in self._files.values():
            f.close()
        shutil.rmtree(self._tmp, ignore_errors=True)
