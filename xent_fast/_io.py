"""Arrays in ``.npy`` / ``.npz`` files read in row chunks, with bounded memory, and per-row
results written out the same way (the ``xent-fast score`` command's input and output).

Inputs must be regular files. A ``.npy`` file, or an ``.npz`` member stored without
compression (what ``numpy.savez`` writes), is read with ordinary positional reads into a
buffer of one chunk, not memory-mapped: a file truncated while it is read then gives a
short read, reported as an error naming the file, where a mapping would kill the
process with SIGBUS; and the page cache the reads go through is not counted in the
process's RSS, so the resident memory stays that of one chunk however large the file. A
compressed member (``numpy.savez_compressed``) is decompressed chunk by chunk as it is
read; a corrupt, encrypted or unsupported member is an error naming the file.

Headers are parsed with NumPy's public functions (versions 1.0 and 2.0) or here (3.0),
never read past a size limit and never unpickled.
"""

from __future__ import annotations

import ast
import contextlib
import math
import os
import shutil
import stat
import struct
import tempfile
import tokenize
import zipfile
import zlib
from pathlib import Path
from typing import IO, Any, BinaryIO, Iterator

import numpy as np
from numpy.lib import format as npy_format

try:
    from lzma import LZMAError
except ImportError:         # Python built without lzma: zipfile cannot read such members
    LZMAError = zipfile.BadZipFile  # type: ignore[misc, assignment]

_MAX_HEADER = 10000         # NumPy's own limit (max_header_size) on a header's length
_NPY_MAGIC = b"\x93NUMPY"
# What zipfile and its decompressors raise on a corrupt, truncated, encrypted or
# unsupported archive or member.
_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, LZMAError, EOFError, OSError, RuntimeError,
               NotImplementedError, ValueError, struct.error)


class InputError(ValueError):
    """A problem with an input or output file, reported to the user as it is."""


# What a reader of the message needs when a file is of a format not read.
_FORMATS_READ = (". xent-fast reads NumPy .npy files and .npz archives; save a PyTorch "
                 "tensor with numpy.save(PATH, tensor.numpy()), a JAX array with "
                 "numpy.save(PATH, numpy.asarray(array))")


def split_spec(spec: str) -> tuple[str, str | None]:
    """``"file.npz:name"`` -> ("file.npz", "name"); anything else -> (spec, None)."""
    head, sep, key = spec.rpartition(":")
    if sep and head.lower().endswith(".npz") and key:
        return head, key
    return spec, None


def open_regular(path: str, role: str) -> BinaryIO:
    """``path`` opened for reading, refused unless it is a regular file.

    A FIFO would block the open or the reads forever and a device such as ``/dev/zero``
    never ends, so both are refused: by ``stat`` first for a clear message, then by
    ``fstat`` on the descriptor, opened non-blocking so that a FIFO put in the file's
    place in between cannot block.
    """
    try:
        st = os.stat(path)
        if stat.S_ISDIR(st.st_mode):
            raise InputError(f"{role} path is a directory: {path}")
        if not stat.S_ISREG(st.st_mode):
            raise InputError(f"{role} {path} is not a regular file (a FIFO, device or "
                             "socket cannot be read as an array)")
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise InputError(f"{role} file not found: {path}") from None
    except OSError as exc:
        raise InputError(f"{role}: cannot read {path}: {exc.strerror or exc}") from None
    f = open(fd, "rb")
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        f.close()
        raise InputError(f"{role} {path} is not a regular file")
    return f


def _pread_into(fd: int, buf: Any, offset: int, name: str) -> None:
    """Fill ``buf`` from ``offset``; a short read means that the file was cut short."""
    view = memoryview(buf).cast("B")
    got = 0
    while got < len(view):
        try:
            n = os.preadv(fd, [view[got:]], offset + got)
        except OSError as exc:
            raise InputError(f"cannot read {name}: {exc.strerror or exc}") from None
        if n == 0:
            raise InputError(f"{name} is truncated: it ends before byte "
                             f"{offset + len(view)}, which the header promised (was it cut "
                             "short while it was read?)")
        got += n


class _Capped:
    """A reader that gives at most ``limit`` bytes: a header that claims a huge length
    is read no further than any real header could be."""

    def __init__(self, fp: IO[bytes], limit: int) -> None:
        self._fp, self._left = fp, limit

    def read(self, n: int = -1) -> bytes:
        n = self._left if n < 0 else min(n, self._left)
        data = self._fp.read(n)
        self._left -= len(data)
        return data


def _header_3_0(fp: Any) -> tuple[Any, Any, np.dtype]:
    # Version 3.0 is 2.0 with a UTF-8 header; NumPy has no public reader for it.
    raw = fp.read(4)
    if len(raw) < 4:
        raise ValueError("the header length is cut short")
    n = int.from_bytes(raw, "little")
    if n > _MAX_HEADER:
        raise ValueError(f"the header claims {n} bytes, more than {_MAX_HEADER}")
    text = fp.read(n)
    if len(text) < n:
        raise ValueError("the header is cut short")
    d = ast.literal_eval(text.decode("utf-8"))        # literals only: no code, no pickles
    if not isinstance(d, dict) or set(d) != {"descr", "fortran_order", "shape"}:
        raise ValueError(f"the header is not a dict of descr, fortran_order and shape: {d!r}")
    return d["shape"], d["fortran_order"], npy_format.descr_to_dtype(d["descr"])


def read_header(fp: IO[bytes], what: str) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, fortran_order, dtype) of the ``.npy`` data at ``fp``'s position, leaving
    ``fp`` at the first byte of the data; InputError naming ``what`` if it is not valid."""
    capped = _Capped(fp, 6 + 2 + 4 + _MAX_HEADER)
    try:
        version = npy_format.read_magic(capped)
        if version == (1, 0):
            shape, fortran, dtype = npy_format.read_array_header_1_0(capped)
        elif version == (2, 0):
            shape, fortran, dtype = npy_format.read_array_header_2_0(capped)
        elif version == (3, 0):
            shape, fortran, dtype = _header_3_0(capped)
        else:
            raise ValueError(f"unknown .npy format version {version[0]}.{version[1]}")
    except (ValueError, TypeError, SyntaxError, EOFError, MemoryError, RecursionError,
            KeyError, tokenize.TokenError) as exc:   # TokenError: NumPy's Python 2 header fix
        raise InputError(f"{what} is not a valid .npy array: {exc}") from None
    except _ZIP_ERRORS as exc:           # a compressed member that is corrupt
        raise InputError(f"cannot read {what}: {exc}") from None
    if (not isinstance(shape, tuple) or not isinstance(fortran, bool)
            or not all(type(d) is int and d >= 0 for d in shape)):
        raise InputError(f"{what} is not a valid .npy array: shape {shape!r}, "
                         f"fortran_order {fortran!r}")
    return shape, fortran, dtype


@contextlib.contextmanager
def _reading(name: str) -> Iterator[None]:
    """Errors of zipfile and the decompressors as InputError naming the file."""
    try:
        yield
    except InputError:
        raise
    except _ZIP_ERRORS as exc:
        raise InputError(f"cannot read {name}, it is corrupt or unsupported: "
                         f"{type(exc).__name__}: {exc}") from None


class ArrayFile:
    """One array of a ``.npy`` file or an ``.npz`` member, read by rows in order.

    ``rows(start, stop)`` returns rows of the array seen as ``(n_rows,) + row_shape``
    (``row_shape`` is ``shape[-1:]`` or ``()``), in a buffer that the next call reuses.
    """

    def __init__(self, spec: str, role: str, default_keys: tuple[str, ...]) -> None:
        path, key = split_spec(spec)
        self.path = self.name = path
        self.role = role
        self._stream: IO[bytes] | None = None
        self._zip: zipfile.ZipFile | None = None
        self._buf = np.empty(0, np.uint8)
        self._pos = 0
        self._file = open_regular(path, role)
        try:
            with _reading(f"{role} {path}"):
                if os.pread(self._file.fileno(), 6, 0) == _NPY_MAGIC:
                    if key is not None:
                        raise InputError(f"{role}: {path} is not an .npz archive, so it has "
                                         f"no array {key!r}")
                    self._open_data(0, os.fstat(self._file.fileno()).st_size, role)
                elif zipfile.is_zipfile(self._file):
                    self._open_npz(path, key, role, default_keys)
                else:
                    raise InputError(f"{role} file {path} is not a valid .npy array or "
                                     f".npz archive{_FORMATS_READ}")
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

    @property
    def nbytes(self) -> int:
        """Size of the array's data (Python ints: a hostile shape cannot overflow)."""
        return math.prod(self.shape) * self.dtype.itemsize

    def _open_data(self, start: int, end: int, role: str) -> None:
        """The .npy data starting at byte ``start`` of the file, which must hold it
        before byte ``end`` (the file's or the stored member's end)."""
        self._file.seek(start)
        self.shape, self.fortran, self.dtype = read_header(self._file, f"{role} {self.name}")
        self._offset = self._file.tell()
        if self._offset + self.nbytes > end:
            raise InputError(f"{role} {self.name} is truncated: the header announces shape "
                             f"{self.shape} but the file is too short")

    def _open_npz(self, path: str, key: str | None, role: str,
                  default_keys: tuple[str, ...]) -> None:
        self._zip = zipfile.ZipFile(self._file)
        names = {n[:-4]: n for n in self._zip.namelist() if n.endswith(".npy")}
        if not names:       # a zip of something else: a PyTorch .pt, a .keras, ...
            raise InputError(f"{role}: {path} is a zip archive that holds no .npy arrays, "
                             f"so it is not an .npz archive{_FORMATS_READ}")
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
        if info.flag_bits & 0x1:
            raise InputError(f"{role} {self.name} is encrypted, which is not supported")
        if info.compress_type == zipfile.ZIP_STORED:
            # The member's bytes are a plain .npy file inside the archive: read it there.
            local = os.pread(self._file.fileno(), 30, info.header_offset)
            if len(local) < 30 or local[:4] != b"PK\x03\x04":
                raise InputError(f"{role}: {path} is not a readable .npz archive")
            start = (info.header_offset + 30 + int.from_bytes(local[26:28], "little")
                     + int.from_bytes(local[28:30], "little"))
            self._open_data(start, min(start + info.compress_size,
                                       os.fstat(self._file.fileno()).st_size), role)
            self._zip.close()
            self._zip = None
        else:
            stream = self._stream = self._zip.open(info)
            self.shape, self.fortran, self.dtype = read_header(stream, f"{role} {self.name}")
            if self.fortran and len(self.shape) > 1:
                raise InputError(f"{role} {self.name} is compressed and stored in Fortran "
                                 "order, so it cannot be read by rows; save it in C order")

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def data_offset(self) -> int | None:
        """Where the array's data starts in ``path``, or None if it is compressed."""
        return None if self._stream is not None else self._offset

    def rows(self, start: int, stop: int, row_shape: tuple[int, ...]) -> np.ndarray:
        """Rows start..stop-1 of the array seen as ``(-1,) + row_shape``, read in order;
        valid until the next call, which reuses the buffer."""
        width = math.prod(row_shape)
        n = stop - start
        nbytes = n * width * self.dtype.itemsize
        if self._stream is not None:
            assert start == self._pos, "rows are read in order"
            with _reading(f"{self.role} {self.name}"):
                data = self._stream.read(nbytes)
                if len(data) == nbytes and stop * width * self.dtype.itemsize == self.nbytes:
                    self._stream.read(1)     # reach the member's end: zipfile checks its CRC
            if len(data) != nbytes:
                raise InputError(f"{self.role} {self.name} is truncated: its data ends "
                                 f"before row {stop}")
            self._pos = stop
            return np.frombuffer(data, self.dtype).reshape((n,) + row_shape)
        if self.fortran and self.ndim > 1:
            # Column-major (R, C): read the rows that hold the wanted elements (flat, in C
            # order) column by column, each column's slice being contiguous.
            n_rows, cols = self.shape
            a, b = start * width, stop * width
            i0, i1 = a // cols, -(-b // cols)
            block = np.empty((cols, i1 - i0), self.dtype)
            for j in range(cols):
                _pread_into(self._file.fileno(), block[j],
                            self._offset + (j * n_rows + i0) * self.dtype.itemsize,
                            f"{self.role} {self.name}")
            return block.T.reshape(-1)[a - i0 * cols:b - i0 * cols].reshape((n,) + row_shape)
        if self._buf.nbytes < nbytes:
            self._buf = np.empty(nbytes, np.uint8)
        out = self._buf[:nbytes].view(self.dtype)
        _pread_into(self._file.fileno(), out, self._offset + start * width * self.dtype.itemsize,
                    f"{self.role} {self.name}")
        return out.reshape((n,) + row_shape)

    def close(self) -> None:
        for obj in (self._stream, self._zip, getattr(self, "_file", None)):
            if obj is not None:
                with contextlib.suppress(*_ZIP_ERRORS):
                    obj.close()
        self._stream = self._zip = None

    def __enter__(self) -> ArrayFile:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def read_block(path: str, offset: int, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    """An array of ``shape`` read from byte ``offset`` of the regular file ``path``;
    InputError naming the file if it is not one or is too short."""
    out = np.empty(shape, dtype)
    with open_regular(path, "file") as f:
        _pread_into(f.fileno(), out, offset, path)
    return out


def first_invalid_target(t: np.ndarray, n_classes: int, ignore: int) -> int | None:
    """Flat position of the first class index in ``t`` that is neither in
    ``[0, n_classes)`` nor ``ignore``, or None. Compared in ``t``'s own dtype, so that a
    uint64 past the int64 range is not taken for the negative it would wrap to."""
    t = np.asarray(t).reshape(-1)
    bad = t >= n_classes
    if t.dtype.kind != "u":
        bad |= t < 0
    if t.dtype.kind != "u" or ignore >= 0:
        bad &= t != ignore
    return int(np.argmax(bad)) if bad.any() else None


class StagedOutput:
    """An output file written first as ``temp``, in a hidden folder beside ``path``,
    and moved onto ``path`` (atomically) only by ``commit``: until then ``path`` is
    untouched, and ``abort`` removes every temporary file."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        # abspath, not resolve: os.replace replaces a symlink itself, in its own folder
        parent = Path(os.path.abspath(self.path)).parent
        try:
            self.folder = Path(tempfile.mkdtemp(prefix=".xent_fast_", dir=parent))
        except OSError as exc:
            raise InputError(f"cannot write {self.path}: {exc.strerror or exc}") from None
        self.temp = self.folder / ("staged" + self.path.suffix)

    def commit(self) -> None:
        os.replace(self.temp, self.path)
        self.abort()

    def abort(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


class NpzWriter:
    """Writes named arrays of known shape into an ``.npz`` file chunk by chunk.

    Each array goes to a temporary ``.npy`` file in a hidden folder beside the output
    (appended to with plain writes, so nothing stays resident); ``close`` packs them into
    an archive there, as ``numpy.savez`` would (uncompressed; ``numpy.load`` reads it),
    and ``commit`` moves it onto the output path. Until then the output is untouched,
    and ``abort`` removes every temporary file.
    """

    def __init__(self, path: str | os.PathLike[str], arrays: dict[str, tuple[tuple[int, ...], np.dtype]]) -> None:
        self.path = Path(path)
        self._out = StagedOutput(path)
        self._files: dict[str, BinaryIO] = {}
        self._dtypes = {}
        try:
            for name, (shape, dtype) in arrays.items():
                f = self._files[name] = open(self._out.folder / f"{name}.npy", "wb")
                self._dtypes[name] = np.dtype(dtype)
                header = {"descr": npy_format.dtype_to_descr(np.dtype(dtype)),
                          "fortran_order": False, "shape": tuple(shape)}
                try:
                    npy_format.write_array_header_1_0(f, header)
                except ValueError:
                    npy_format.write_array_header_2_0(f, header)
        except BaseException:
            self.abort()
            raise

    def write(self, chunk: dict[str, np.ndarray]) -> None:
        for name, f in self._files.items():
            f.write(np.ascontiguousarray(chunk[name], self._dtypes[name]).tobytes())

    def close(self) -> None:
        """Pack the arrays into the archive, still in the temporary folder."""
        for f in self._files.values():
            f.close()
        with zipfile.ZipFile(self._out.temp, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
            for name in self._files:
                zf.write(self._out.folder / f"{name}.npy", arcname=f"{name}.npy")
                os.unlink(self._out.folder / f"{name}.npy")

    def commit(self) -> None:
        """Move the packed archive onto the output path and remove the folder."""
        self._out.commit()

    def abort(self) -> None:
        for f in self._files.values():
            f.close()
        self._out.abort()
