"""The shard tar reader against tarfile, on well-formed and damaged tars, and the fast PNG path."""

from __future__ import annotations

import io
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from simgan_dist.io.shardio import decode_png
from simgan_dist.io.tar_reader import iter_tar_files
from simgan_dist.model.pixels import to_batch, to_tensor


def _tar(members: list[tuple[str, bytes]], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
                continue
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _read(data: bytes) -> list[tuple[str, bytes]]:
    return [(f["fname"], f["data"]) for f in iter_tar_files(io.BytesIO(data))]


LONG = "deep/" * 30 + "sample-0001.png"  # 165 characters: past ustar's 100-byte name field
MEMBERS = [
    ("a-0000.png", b"\x89PNG one"),
    ("a-0000.json", b"{}"),
    ("empty-0001.txt", b""),
    ("big-0002.bin", bytes(range(256)) * 5),  # not a multiple of 512: padding follows
    ("ümlaut-0003.txt", b"non-ascii name"),
    (LONG, b"long name"),
]


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_reads_what_tarfile_reads(fmt: int) -> None:
    members = MEMBERS if fmt != tarfile.USTAR_FORMAT else MEMBERS[:-1]  # ustar: no long names
    data = _tar(members, fmt)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        expected = [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]
    assert _read(data) == expected == members


def test_skips_directories_and_webdataset_metadata() -> None:
    data = _tar([("dir", None), ("__index__", b"x"), ("__meta__/a", b"y"), ("k.png", b"z")])
    assert _read(data) == [("k.png", b"z")]


@pytest.mark.parametrize("compression", ["gz", "bz2", "xz"])
def test_compressed_tars_are_read_as_tarfile_reads_them(compression: str) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=f"w:{compression}") as tar:
        for name, data in MEMBERS:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    assert _read(buf.getvalue()) == MEMBERS
    assert [(f["fname"], f["data"]) for f in iter_tar_files(_Trickle(buf.getvalue()))] == MEMBERS


def _with_header_field(data: bytes, at: int, value: bytes) -> bytes:
    """data with its first header's bytes at `at` replaced, and the checksum made right again."""
    header = bytearray(data[:512])
    header[at : at + len(value)] = value
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\0 " % sum(header)
    return bytes(header) + data[512:]


def test_members_without_data_and_metadata_names() -> None:
    # A directory or link header with a size: tar reads no data for it (tarfile neither).
    dir_info = tarfile.TarInfo("d")
    dir_info.type, dir_info.size = tarfile.DIRTYPE, 600
    v7_dir = tarfile.TarInfo("v7dir/")  # V7 tars mark directories by the slash alone
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        tar.addfile(dir_info)
        tar.addfile(v7_dir)
        for name in ("__key__", "k.txt"):
            info = tarfile.TarInfo(name)
            info.size = 1
            tar.addfile(info, io.BytesIO(b"z"))
    assert _read(buf.getvalue()) == [("k.txt", b"z")]


def test_sparse_files_are_refused() -> None:
    data = _tar([("a.bin", b"x" * 10)], tarfile.GNU_FORMAT)
    with pytest.raises(tarfile.ReadError, match="sparse"):
        _read(_with_header_field(data, 156, b"S"))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("a.bin")
        info.size, info.pax_headers = 1, {"GNU.sparse.major": "1", "GNU.sparse.minor": "0"}
        tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(tarfile.ReadError, match="sparse"):
        _read(buf.getvalue())


def test_a_pax_header_with_no_member_after_it_is_truncation() -> None:
    data = _tar([("a.png", b"1"), ("ü.png", b"2")], tarfile.PAX_FORMAT)
    # a.png (header + 1 block), then ü.png's pax header (header + 1 block): cut right there.
    with pytest.raises(tarfile.ReadError, match="describes a member that is not there"):
        _read(data[:2048])
    with pytest.raises(tarfile.ReadError, match="describes a member that is not there"):
        _read(data[:2048] + bytes(1024))


def test_end_of_archive_and_record_padding() -> None:
    data = _tar(MEMBERS)
    files_end = -(-len(data.rstrip(b"\0")) // 512) * 512
    # tarfile pads to a 10 KiB record after the end-of-archive blocks; a copy cut anywhere in
    # that padding at a block boundary is whole, and so is one with no end block at all (as tar
    # accepts it).
    for end in (files_end, files_end + 512, files_end + 1024, len(data)):
        assert _read(data[:end]) == MEMBERS
    with pytest.raises(tarfile.ReadError, match="not a whole number of 512-byte blocks"):
        _read(data[: files_end + 600])


@pytest.mark.parametrize(
    ("cut", "message"),
    [
        (100, "header at byte 0"),  # inside the first header
        (512 + 10, "member at byte 0 has 10 of"),  # inside a file's data
    ],
)
def test_truncated_tar_is_an_error(cut: int, message: str) -> None:
    data = _tar([("a.bin", bytes(600))], tarfile.USTAR_FORMAT)
    with pytest.raises(tarfile.ReadError, match=message):
        _read(data[:cut])


def test_file_whose_padding_is_cut_is_kept_then_an_error() -> None:
    data = _tar([("a.txt", b"hi"), ("b.txt", b"there")], tarfile.USTAR_FORMAT)
    seen = []
    with pytest.raises(tarfile.ReadError, match="not a whole number of 512-byte blocks"):
        for f in iter_tar_files(io.BytesIO(data[: 2 * 512 + 512 + 100])):
            seen.append(f["fname"])
    assert seen == ["a.txt", "b.txt"]


def test_empty_and_damaged_headers_are_errors() -> None:
    with pytest.raises(tarfile.ReadError, match="empty"):
        _read(b"")
    data = bytearray(_tar([("a.txt", b"hi"), ("b.txt", b"there")], tarfile.USTAR_FORMAT))
    data[1024 + 3] ^= 0xFF  # the second header's name: tarfile's stream mode would just stop
    seen = []
    with pytest.raises(tarfile.ReadError, match="corrupt tar header at byte 1024: bad checksum"):
        for f in iter_tar_files(io.BytesIO(bytes(data))):
            seen.append(f["fname"])
    assert seen == ["a.txt"]


class _Trickle(io.RawIOBase):
    """A stream that returns at most 100 bytes per read, as network streams may."""

    def __init__(self, data: bytes) -> None:
        self.buf = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        return self.buf.read(min(100, size) if size >= 0 else 100)


def test_short_reads_are_not_truncation() -> None:
    data = _tar(MEMBERS)
    files = [(f["fname"], f["data"]) for f in iter_tar_files(_Trickle(data))]
    assert files == MEMBERS


def _png(img: np.ndarray, **save: object) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG", **save)
    return buf.getvalue()


def _pillow(data: bytes) -> np.ndarray:
    im = Image.open(io.BytesIO(data))
    if im.mode.startswith("I"):
        return np.array(im).astype(np.uint16)
    return np.array(im if im.mode in ("L", "RGB", "RGBA") else im.convert("RGB"))


@pytest.mark.parametrize(
    "shape_dtype",
    [((5, 7), np.uint8), ((5, 7, 3), np.uint8), ((5, 7, 4), np.uint8), ((5, 7), np.uint16)],
)
@pytest.mark.parametrize("transparency", [False, True])
def test_decode_png_matches_pillow(shape_dtype: tuple, transparency: bool) -> None:
    shape, dtype = shape_dtype
    img = np.random.default_rng(0).integers(0, np.iinfo(dtype).max, shape, dtype=dtype)
    save = {}
    if transparency and len(shape) == 2:
        save["transparency"] = 5
    elif transparency and shape[-1] == 3:
        save["transparency"] = (1, 2, 3)
    data = _png(img, **save)
    decoded = decode_png(data)
    assert decoded.dtype == dtype
    np.testing.assert_array_equal(decoded, img)
    np.testing.assert_array_equal(decoded, _pillow(data))


def test_decode_png_palette_and_damage() -> None:
    rgb = np.random.default_rng(1).integers(0, 256, (6, 8, 3), dtype=np.uint8)
    palette = Image.fromarray(rgb).convert("P")
    buf = io.BytesIO()
    palette.save(buf, format="PNG")
    np.testing.assert_array_equal(decode_png(buf.getvalue()), np.array(palette.convert("RGB")))
    data = bytearray(_png(rgb))
    data[-20] ^= 0xFF  # inside the image data: its CRC no longer matches
    with pytest.raises(ValueError, match="undecodable PNG"):
        decode_png(bytes(data))
    with pytest.raises(ValueError, match="undecodable PNG"):
        decode_png(bytes(data[:60]))


@pytest.mark.parametrize(
    "images",
    [
        [np.full((4, 5), v, np.uint8) for v in (0, 7, 255)],
        [np.random.default_rng(2).integers(0, 256, (4, 5, 3), dtype=np.uint8) for _ in range(2)],
        [np.array([[0, 65535]], np.uint16)] * 2,
        [np.zeros((2, 2), np.uint8), np.full((2, 2), 40000, np.uint16)],  # mixed: per image
    ],
)
def test_to_batch_maps_as_to_tensor(images: list[np.ndarray]) -> None:
    batch = to_batch(images)
    assert batch.is_contiguous() and batch.dtype == torch.float32
    assert torch.equal(batch, torch.stack([to_tensor(img) for img in images]))
