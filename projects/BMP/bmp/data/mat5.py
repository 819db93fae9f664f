"""A small reader for MATLAB level-5 MAT-files (v5/v6/v7, with zlib-compressed variables).

SBD ships its masks as ``.mat`` files (``GTcls.Segmentation``). scipy is not a BMP dependency, and
pulling it in for one conversion script is heavy, so this module reads the subset of the format
those files use: numeric and logical arrays, char arrays, cells, structs and sparse matrices.
MATLAB 7.3 files are HDF5 and are rejected with a clear message.

Format (MathWorks, "MAT-File Format"): a 128-byte header, then data elements, each a tag
``(type: u32, nbytes: u32)`` followed by the payload padded to 8 bytes, or a "small" element whose
type and size share one u32 and whose <= 4 data bytes follow. ``miCOMPRESSED`` holds a zlib stream
of one complete element. A variable is an ``miMATRIX`` element: array flags, dimensions, name,
then class-specific parts. Arrays are column-major.
"""

import zlib
from typing import Any, Dict, List, Tuple

import numpy as np

__all__ = ["load_mat5", "MatFileError"]

_MI_INT8, _MI_INT32, _MI_UINT32, _MI_MATRIX, _MI_COMPRESSED = 1, 5, 6, 14, 15
_MI_DTYPES = {
    1: "i1", 2: "u1", 3: "i2", 4: "u2", 5: "i4", 6: "u4", 7: "f4", 9: "f8", 12: "i8", 13: "u8",
    16: "u1", 17: "u2", 18: "u4",
}  # fmt: skip
_MX_CELL, _MX_STRUCT, _MX_OBJECT, _MX_CHAR, _MX_SPARSE = 1, 2, 3, 4, 5
_MX_DTYPES = {
    6: "f8", 7: "f4", 8: "i1", 9: "u1", 10: "i2", 11: "u2", 12: "i4", 13: "u4", 14: "i8", 15: "u8",
}  # fmt: skip
_FLAG_COMPLEX, _FLAG_LOGICAL = 0x800, 0x200


class MatFileError(ValueError):
    """The file is not a MAT-file this reader understands."""


class _Reader:
    def __init__(self, buf: bytes, endian: str, path: str):
        self.buf, self.endian, self.path = buf, endian, path

    def _fail(self, msg: str) -> MatFileError:
        return MatFileError(f"MAT-file '{self.path}': {msg}")

    def tag(self, pos: int) -> Tuple[int, int, int, int]:
        """Return ``(type, nbytes, data_start, next_element_pos)`` of the element at ``pos``."""
        if pos + 8 > len(self.buf):
            raise self._fail("truncated data element")
        first = int(np.frombuffer(self.buf, self.endian + "u4", 1, pos)[0])
        if first >> 16:  # small data element: 2-byte size, 2-byte type, data in the same 8 bytes
            return first & 0xFFFF, first >> 16, pos + 4, pos + 8
        nbytes = int(np.frombuffer(self.buf, self.endian + "u4", 1, pos + 4)[0])
        end = pos + 8 + nbytes
        if end > len(self.buf):
            raise self._fail("truncated data element")
        return first, nbytes, pos + 8, pos + 8 + ((nbytes + 7) // 8) * 8

    def numeric(self, pos: int) -> Tuple[np.ndarray, int]:
        mtype, nbytes, start, nxt = self.tag(pos)
        if mtype not in _MI_DTYPES:
            raise self._fail(f"unsupported data type {mtype}")
        dt = np.dtype(self.endian + _MI_DTYPES[mtype])
        return np.frombuffer(self.buf, dt, nbytes // dt.itemsize, start).copy(), nxt

    def matrix(self, start: int, nbytes: int) -> Tuple[str, Any]:
        """Parse the payload of an miMATRIX element: returns ``(name, value)``."""
        if nbytes == 0:
            return "", np.zeros((0, 0))
        end = start + nbytes
        flags, pos = self.numeric(start)
        mclass, is_complex, is_logical = (
            int(flags[0]) & 0xFF, bool(flags[0] & _FLAG_COMPLEX), bool(flags[0] & _FLAG_LOGICAL)
        )  # fmt: skip
        dims_arr, pos = self.numeric(pos)
        dims = tuple(int(d) for d in dims_arr)
        name_arr, pos = self.numeric(pos)
        name = name_arr.astype(np.uint8).tobytes().decode("ascii", "replace")
        count = int(np.prod(dims)) if dims else 0

        if mclass == _MX_CELL:
            items = np.empty(count, dtype=object)
            for i in range(count):
                items[i], pos = self.child(pos)
            return name, items.reshape(dims, order="F")
        if mclass == _MX_STRUCT:
            fnlen_arr, pos = self.numeric(pos)
            raw, pos = self.numeric(pos)
            fnlen = int(fnlen_arr[0])
            blob = raw.astype(np.uint8).tobytes()
            fields = [
                blob[i : i + fnlen].split(b"\0", 1)[0].decode("ascii")
                for i in range(0, len(blob), fnlen)
            ]
            records: List[Dict[str, Any]] = []
            for _ in range(count):
                rec = {}
                for f in fields:
                    rec[f], pos = self.child(pos)
                records.append(rec)
            if count == 1:
                return name, records[0]
            arr = np.empty(count, dtype=object)
            arr[:] = records
            return name, arr.reshape(dims, order="F")
        if mclass == _MX_OBJECT:
            raise self._fail(f"variable '{name}' is a MATLAB object, which is not supported")
        if mclass == _MX_CHAR:
            data, pos = self.numeric(pos)
            chars = np.array([chr(int(c)) for c in data], dtype="<U1").reshape(dims, order="F")
            if chars.ndim == 2 and chars.shape[0] == 1:
                return name, "".join(chars[0])
            return name, chars
        if mclass == _MX_SPARSE:
            rows, pos = self.numeric(pos)
            cols, pos = self.numeric(pos)
            vals, pos = self.numeric(pos)
            if is_complex:
                imag, pos = self.numeric(pos)
                vals = vals + 1j * imag
            dense = np.zeros(dims, dtype=bool if is_logical else vals.dtype)
            for j in range(dims[1]):
                lo, hi = int(cols[j]), int(cols[j + 1])
                dense[rows[lo:hi], j] = vals[lo:hi]
            return name, dense
        if mclass not in _MX_DTYPES:
            raise self._fail(f"variable '{name}' has unsupported array class {mclass}")
        real, pos = self.numeric(pos)
        value = real.astype(_MX_DTYPES[mclass])
        if is_complex:
            imag, pos = self.numeric(pos)
            value = value + 1j * imag.astype(_MX_DTYPES[mclass])
        if is_logical:
            value = value.astype(bool)
        if value.size != count:
            raise self._fail(f"variable '{name}' has {value.size} values for dimensions {dims}")
        if pos > end:
            raise self._fail(f"variable '{name}' overruns its element")
        return name, value.reshape(dims, order="F")

    def child(self, pos: int) -> Tuple[Any, int]:
        """A nested miMATRIX (cell item or struct field): returns ``(value, next_pos)``."""
        mtype, nbytes, start, nxt = self.tag(pos)
        if mtype != _MI_MATRIX:
            raise self._fail(f"expected a nested matrix, found data type {mtype}")
        return self.matrix(start, nbytes)[1], nxt


def load_mat5(path: str) -> Dict[str, Any]:
    """Read every variable of a level-5 MAT-file into ``{name: value}``.

    Values: numpy arrays (column-major data reshaped to MATLAB's dimensions), ``str`` for char
    row vectors, ``dict`` for a 1x1 struct (object arrays of dicts otherwise), object arrays for
    cells, dense arrays for sparse matrices.
    """
    with open(path, "rb") as f:
        buf = f.read()
    if buf[:10] == b"MATLAB 7.3":
        raise MatFileError(
            f"MAT-file '{path}' is MATLAB 7.3 (HDF5), which this reader does not support; "
            "re-save it with `save(..., '-v7')` or read it with h5py."
        )
    if len(buf) < 128 or buf[126:128] not in (b"IM", b"MI"):
        raise MatFileError(f"'{path}' is not a MATLAB level-5 MAT-file (bad or truncated header).")
    endian = "<" if buf[126:128] == b"IM" else ">"
    top = _Reader(buf, endian, path)
    out: Dict[str, Any] = {}
    pos = 128
    while pos + 8 <= len(buf):
        mtype, nbytes, start, nxt = top.tag(pos)
        if mtype == _MI_COMPRESSED:
            try:
                inner = zlib.decompress(buf[start : start + nbytes])
            except zlib.error as e:
                raise MatFileError(f"MAT-file '{path}': corrupt compressed variable ({e})") from e
            sub = _Reader(inner, endian, path)
            itype, inbytes, istart, _ = sub.tag(0)
            if itype == _MI_MATRIX:
                name, value = sub.matrix(istart, inbytes)
                out[name] = value
            pos = start + nbytes  # compressed elements are not padded
        else:
            if mtype == _MI_MATRIX:
                name, value = top.matrix(start, nbytes)
                out[name] = value
            pos = nxt
    return out
