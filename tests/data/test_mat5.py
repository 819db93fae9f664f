"""The MAT-file reader on hand-built bytes and on files from an independent writer."""

import struct

import numpy as np
import pytest
from mat5_writer import write_mat5

from bmp.data.mat5 import MatFileError, load_mat5


def _header() -> bytes:
    return b"MATLAB 5.0 MAT-file".ljust(116, b" ") + b"\0" * 8 + struct.pack("<H", 0x0100) + b"IM"


def test_hand_built_uint8_matrix_is_column_major(tmp_path):
    # A 2x3 uint8 matrix "m" = [[1, 2, 3], [4, 5, 6]] stored column-major: 1 4 2 5 3 6.
    body = struct.pack("<II", 6, 8) + struct.pack("<II", 9, 0)  # array flags: class uint8
    body += struct.pack("<II", 5, 8) + struct.pack("<ii", 2, 3)  # dimensions
    body += struct.pack("<HH", 1, 1) + b"m\0\0\0"  # name as a small element
    body += struct.pack("<II", 2, 6) + bytes([1, 4, 2, 5, 3, 6]) + b"\0\0"  # data, padded
    path = tmp_path / "m.mat"
    path.write_bytes(_header() + struct.pack("<II", 14, len(body)) + body)
    m = load_mat5(str(path))["m"]
    assert m.dtype == np.uint8
    np.testing.assert_array_equal(m, [[1, 2, 3], [4, 5, 6]])


@pytest.mark.parametrize("compress", [False, True])
def test_sbd_like_struct_roundtrip(tmp_path, compress):
    seg = (np.arange(35, dtype=np.uint8) % 21).reshape(5, 7)
    gt = {
        "Boundaries": [np.eye(2), np.ones((1, 3))],
        "Segmentation": seg,
        "CategoriesPresent": np.array([3, 15], np.uint8),
    }
    path = tmp_path / "sbd.mat"
    write_mat5(str(path), [("GTcls", gt), ("x", np.array([[-2, 7]], np.int16))], compress)
    out = load_mat5(str(path))
    assert set(out) == {"GTcls", "x"}
    g = out["GTcls"]
    np.testing.assert_array_equal(g["Segmentation"], seg)
    assert g["Segmentation"].dtype == np.uint8
    np.testing.assert_array_equal(g["CategoriesPresent"].ravel(), [3, 15])
    assert g["Boundaries"].shape == (2, 1)
    np.testing.assert_array_equal(g["Boundaries"][1, 0], np.ones((1, 3)))
    np.testing.assert_array_equal(out["x"], [[-2, 7]])


def test_rejects_non_mat_and_hdf5(tmp_path):
    bad = tmp_path / "bad.mat"
    bad.write_bytes(b"not a mat file at all" * 10)
    with pytest.raises(MatFileError, match="bad.mat"):
        load_mat5(str(bad))
    v73 = tmp_path / "v73.mat"
    v73.write_bytes(b"MATLAB 7.3 MAT-file".ljust(128, b" "))
    with pytest.raises(MatFileError, match="7.3"):
        load_mat5(str(v73))


def test_truncated_file_names_the_file(tmp_path):
    path = tmp_path / "t.mat"
    write_mat5(str(path), [("a", np.zeros((4, 4), np.uint8))])
    data = path.read_bytes()
    path.write_bytes(data[:-20])
    with pytest.raises(MatFileError, match="t.mat"):
        load_mat5(str(path))
