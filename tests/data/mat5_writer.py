"""A tiny MATLAB level-5 writer for the tests (scipy is not a dependency).

Independent of the reader under test: it follows the MathWorks layout directly (tags, padding to
8 bytes, small-element format for <= 4 data bytes, column-major data, zlib for compression).
"""

import struct
import zlib
from typing import Any, Sequence, Tuple

import numpy as np

_MI = {np.dtype("uint8"): 2, np.dtype("int16"): 3, np.dtype("int32"): 5, np.dtype("float64"): 9}
_MX = {np.dtype("uint8"): 9, np.dtype("int16"): 10, np.dtype("int32"): 12, np.dtype("float64"): 6}


def element(mtype: int, payload: bytes, small_ok: bool = True) -> bytes:
    n = len(payload)
    if small_ok and 0 < n <= 4:
        return struct.pack("<HH", mtype, n) + payload.ljust(4, b"\0")
    return struct.pack("<II", mtype, n) + payload + b"\0" * ((-n) % 8)


def matrix(name: str, value: Any) -> bytes:
    if isinstance(value, dict):
        fields = list(value)
        rest = element(5, struct.pack("<i", 32)) + element(
            1, b"".join(f.encode().ljust(32, b"\0") for f in fields)
        )
        rest += b"".join(matrix("", value[f]) for f in fields)
        cls, shape = 2, (1, 1)
    elif isinstance(value, list):
        rest = b"".join(matrix("", v) for v in value)
        cls, shape = 1, (len(value), 1)
    else:
        arr = np.asarray(value)
        if arr.ndim == 1:
            arr = arr[:, None]
        rest = element(_MI[arr.dtype], arr.tobytes(order="F"))
        cls, shape = _MX[arr.dtype], arr.shape
    head = element(6, struct.pack("<II", cls, 0))
    head += element(5, struct.pack(f"<{len(shape)}i", *shape))
    head += element(1, name.encode())
    body = head + rest
    return struct.pack("<II", 14, len(body)) + body


def write_mat5(path: str, variables: Sequence[Tuple[str, Any]], compress: bool = False) -> None:
    text = b"MATLAB 5.0 MAT-file, Platform: GLNXA64, written by BMP tests"
    out = text.ljust(116, b" ") + b"\0" * 8 + struct.pack("<H", 0x0100) + b"IM"
    for name, value in variables:
        el = matrix(name, value)
        if compress:
            z = zlib.compress(el)
            out += struct.pack("<II", 15, len(z)) + z
        else:
            out += el
    with open(path, "wb") as f:
        f.write(out)
