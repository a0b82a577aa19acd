"""Shard I/O: PNG codec, WebDataset tar writer, manifests with checksums, and shard URL resolution."""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import re
import tarfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import braceexpand
import numpy as np
import pyspng
import webdataset
from PIL import Image
from webdataset.tariterators import base_plus_ext

from simgan_dist.errors import InputError, kind
from simgan_dist.io import urls
from simgan_dist.io.location import Location, register_gopen_schemes
from simgan_dist.io.tar_reader import DamagedMember, iter_tar_files

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "simgan-dist-shards/1"
# WebDataset splits "dir/key.ext" at the first dot of the base name, so keys may not contain dots.
_KEY_RE = re.compile(r"^[^.\s]+$")
# Fixed tar mtime: rebuilding a corpus from the same seed gives byte-identical shards and checksums.
_TAR_MTIME = 0


# ---------------------------------------------------------------------------------------------
# PNG codec


def encode_png(img: np.ndarray) -> bytes:
    """uint8 (H,W) gray, uint8 (H,W,3|4) colour, or uint16 (H,W) depth -> PNG bytes."""
    if img.dtype == np.uint8 and (img.ndim == 2 or (img.ndim == 3 and img.shape[2] in (1, 3, 4))):
        arr = img[:, :, 0] if img.ndim == 3 and img.shape[2] == 1 else img
    elif img.dtype == np.uint16 and img.ndim == 2:
        arr = img  # Pillow writes a 16-bit grayscale PNG ("I;16")
    else:
        raise InputError(
            f"encode_png: need uint8 (H,W[,C]) or uint16 (H,W), got {img.dtype} {img.shape}"
        )
    buf = io.BytesIO()
    # Pillow's default zlib level: at 28x28..55x35 levels 1-9 differ by <5% in bytes and time.
    Image.fromarray(np.ascontiguousarray(arr)).save(buf, format="PNG")
    return buf.getvalue()


# 8-bit PNGs whose pixels libspng returns exactly as Pillow's modes L, RGB and RGBA do: (bit depth,
# colour type) from the IHDR chunk. Others (16-bit, which pyspng 0.1 returns with an added alpha
# channel; palette, grey+alpha, 1-bit) go through Pillow and its conversions.
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_SPNG_FORMATS = {(8, 0), (8, 2), (8, 6)}


def _check_png_chunks(data: bytes) -> None:
    """Every chunk's CRC-32, up to IEND. libspng skips the image data's checksums (a flipped
    byte there decodes to wrong pixels without an error); this costs ~2 us for a small PNG."""
    view, pos = memoryview(data), len(_PNG_SIGNATURE)
    while pos < len(data):
        length = int.from_bytes(view[pos : pos + 4], "big")
        end = pos + 12 + length  # length, type, data, CRC
        if end > len(data):
            raise InputError(f"undecodable PNG: cut short in a chunk at byte {pos}")
        if zlib.crc32(view[pos + 4 : end - 4]) != int.from_bytes(view[end - 4 : end], "big"):
            raise InputError(
                f"undecodable PNG: bad CRC in the {bytes(view[pos + 4 : pos + 8])!r} chunk"
            )
        if view[pos + 4 : pos + 8] == b"IEND":
            return
        pos = end
    raise InputError("undecodable PNG: no IEND chunk (cut short)")


def png_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG's IHDR chunk, without decoding; None when data is no PNG."""
    if len(data) < 24 or data[:8] != _PNG_SIGNATURE or data[12:16] != b"IHDR":
        return None
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def decode_png(data: bytes) -> np.ndarray:
    """PNG bytes -> uint8 (H,W) / (H,W,C), or uint16 (H,W) for 16-bit grayscale.

    Common formats decode with libspng (pyspng): ~10 us for a 28x28 digit with the CRC checks,
    against Pillow's ~34, most of which is Pillow's per-image Python (plugins, decoder objects)."""
    if len(data) > 26 and data[:8] == _PNG_SIGNATURE and (data[24], data[25]) in _SPNG_FORMATS:
        _check_png_chunks(data)
        try:
            return pyspng.load(data)
        except RuntimeError as err:  # invalid chunk, bad compressed stream...
            raise InputError(f"undecodable PNG: {err}") from None
    try:
        im = Image.open(io.BytesIO(data))
    except OSError as err:  # PIL.UnidentifiedImageError: not an image at all
        raise InputError(f"undecodable PNG: {err}") from None
    with im:
        if im.format != "PNG":
            raise InputError(f"not a PNG image (format {im.format})")
        if im.mode in ("I;16", "I;16B", "I"):
            return np.array(im).astype(np.uint16)  # older Pillows open 16-bit PNGs as int32 "I"
        if im.mode not in ("L", "RGB", "RGBA"):
            return np.array(im.convert("RGBA" if "A" in im.mode else "RGB"))  # palette/LA/1-bit
        return np.array(im)


def image_chw(img: np.ndarray) -> tuple[int, int, int]:
    """(C,H,W) of a decoded image array, the convention manifests and configs use."""
    if img.ndim == 2:
        return (1, img.shape[0], img.shape[1])
    return (img.shape[2], img.shape[0], img.shape[1])


def _json_default(obj: Any) -> Any:
    # Simulators hand out numpy scalars and small arrays as annotations.
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


# ---------------------------------------------------------------------------------------------
# Manifests


@dataclass(frozen=True)
class ShardInfo:
    name: str  # file name, relative to the manifest's directory
    num_samples: int
    sha256: str
    num_bytes: int


@dataclass(frozen=True)
class Manifest:
    """A corpus: its shards in order, the common image shape, and whether samples carry json."""

    name: str
    shards: tuple[ShardInfo, ...]
    image_shape: tuple[int, int, int]  # (C, H, W)
    has_labels: bool  # every sample has a json annotation (synthetic, eval); False for real-train

    @property
    def num_samples(self) -> int:
        return sum(s.num_samples for s in self.shards)

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": MANIFEST_FORMAT,
                "name": self.name,
                "image_shape": list(self.image_shape),
                "has_labels": self.has_labels,
                "num_samples": self.num_samples,
                "shards": [vars(s) for s in self.shards],
            },
            indent=1,
        )

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT:
            found = data.get("format") if isinstance(data, dict) else type(data).__name__
            raise InputError(f"not a {MANIFEST_FORMAT} manifest (format {found!r})")
        shards = tuple(ShardInfo(**s) for s in data["shards"])
        names = [s.name for s in shards]
        for name in names:
            check_shard_name(name)
        if len(set(names)) != len(names):
            twice = next(n for n in names if names.count(n) > 1)
            raise InputError(f"shard {twice!r} is listed more than once")
        return cls(
            name=data["name"],
            shards=shards,
            image_shape=tuple(data["image_shape"]),
            has_labels=bool(data["has_labels"]),
        )


def check_shard_name(name: object) -> None:
    """A manifest's shard name is a relative path inside the manifest's folder: no absolute
    path, no URL, no '..' and no empty part. Otherwise a corpus could make `shards verify`,
    training or refine read (and name in their output) a file anywhere the reader may read."""
    parts = name.split("/") if isinstance(name, str) else [""]
    if any(part in ("", ".", "..") for part in parts) or "\\" in str(name):
        raise InputError(
            f"shard name {name!r}: must be a relative path inside the manifest's folder "
            "(no leading '/', no '..', no URL)"
        )


class _HashingFile:
    """Write-through wrapper that hashes and counts bytes, so a shard is never read back."""

    def __init__(self, f: Any) -> None:
        self.f, self.sha, self.num_bytes = f, hashlib.sha256(), 0

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        self.num_bytes += len(data)
        return self.f.write(data)


def check_key(key: str) -> None:
    """Raise ValueError for a key we neither write nor read: empty, with dots or spaces (so no
    '..'), a leading '/' (an absolute member name) or a leading '__' (WebDataset's own fields).
    Relative slashes stay allowed: WebDataset keys may carry a folder prefix."""
    if not _KEY_RE.match(key) or key.startswith(("__", "/")):
        raise InputError(f"bad sample key {key!r}: no dots, spaces, leading '/' or leading '__'")


class _SampleCheck:
    """Validates samples as they stream past: key syntax, unique keys, one image shape."""

    def __init__(self) -> None:
        self.keys: set[str] = set()  # ~100 bytes a key: fine up to tens of millions of samples
        self.shape: tuple[int, int, int] | None = None
        self.all_json = True

    def __call__(self, key: str, img: np.ndarray, meta: dict | None) -> None:
        check_key(key)
        if key in self.keys:
            raise InputError(f"duplicate sample key {key!r}")
        self.keys.add(key)
        shape = image_chw(img)
        if self.shape is None:
            self.shape = shape
        elif shape != self.shape:
            raise InputError(f"sample {key!r} has shape {shape}, the others have {self.shape}")
        self.all_json = self.all_json and meta is not None


def _write_shard(
    shard: Location, samples: Iterable[tuple[str, np.ndarray, dict | None]], check: _SampleCheck
) -> ShardInfo:
    count = 0
    # A crash leaves at most a temporary, never a truncated shard under the real name.
    with shard.atomic_write() as raw:
        hashed = _HashingFile(raw)
        writer = webdataset.TarWriter(hashed, mtime=_TAR_MTIME, encoder=False)
        try:
            for key, img, meta in samples:
                check(key, img, meta)
                record = {"__key__": key, "png": encode_png(img)}
                if meta is not None:
                    record["json"] = json.dumps(meta, default=_json_default).encode()
                writer.write(record)
                count += 1
        finally:
            writer.close()  # before the file closes, or tarfile's __del__ writes to it late
    return ShardInfo(shard.name, count, hashed.sha.hexdigest(), hashed.num_bytes)


def write_shard(
    url: Location | str | Path, samples: Iterable[tuple[str, np.ndarray, dict | None]]
) -> ShardInfo:
    """Write one WebDataset tar of (key, image, json-or-None) samples, atomically.

    The shard appears under its name only once complete, so "the file exists" means "done":
    resumable jobs (refinement) rely on that. url may be a local path or an fsspec URL.
    """
    return _write_shard(Location.of(url), samples, _SampleCheck())


def write_manifest(out_dir: Location | str | Path, manifest: Manifest) -> str:
    """Write out_dir/manifest.json atomically: readers see the old one or the new one."""
    location = Location.of(out_dir).join(MANIFEST_NAME)
    with location.atomic_write() as f:
        f.write(manifest.to_json().encode())
    return location.url


def write_shards(
    samples: Iterable[tuple[str, np.ndarray, dict | None]],
    out_dir: Location | str | Path,
    prefix: str,
    samples_per_shard: int,
    name: str | None = None,
) -> Manifest:
    """Stream (key, image, json-or-None) into out_dir/{prefix}-NNNNNN.tar and write the manifest.

    out_dir is a local directory or a bucket prefix (s3://bucket/corpus). Keys must be unique and
    dot-free, all images one shape. has_labels is True when every sample carried a json dict.
    The manifest is written last, after every shard is complete.
    """
    if samples_per_shard < 1:
        raise InputError(f"samples_per_shard must be >= 1, got {samples_per_shard}")
    out = Location.of(out_dir)
    check = _SampleCheck()
    shards: list[ShardInfo] = []
    it = iter(samples)
    for first in it:  # each pass of the loop writes one shard, starting with `first`
        chunk = itertools.chain([first], itertools.islice(it, samples_per_shard - 1))
        shards.append(_write_shard(out.join(f"{prefix}-{len(shards):06d}.tar"), chunk, check))
    if check.shape is None:
        raise InputError(f"write_shards: no samples for {out}/{prefix}-*.tar")
    manifest = Manifest(name or prefix, tuple(shards), check.shape, check.all_json)
    write_manifest(out, manifest)
    return manifest


# ---------------------------------------------------------------------------------------------
# Locations: a directory or bucket prefix (with or without manifest), a manifest.json, a single
# .tar, a glob, or a brace range; local paths, file:// and any fsspec protocol (s3://, gs://).


def read_manifest(where: Location | str | Path) -> Manifest:
    """The Manifest in a shard directory or prefix, or at a manifest.json URL."""
    location = Location.of(where)
    if location.name != MANIFEST_NAME:
        location = location.join(MANIFEST_NAME)
    try:
        text = location.read_text()
    except FileNotFoundError:
        raise FileNotFoundError(f"{location}: no {MANIFEST_NAME}") from None
    try:
        return Manifest.from_json(text)
    except (ValueError, KeyError, TypeError) as err:  # bad JSON, a missing or odd field
        raise InputError(f"{location}: {kind(err)}: {err}") from None


# What a folder's shards end in: plain tars, and the compressed ones the tar reader opens (it
# tells them by their first bytes). A folder's other files are not shards.
SHARD_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")


def is_shard_name(name: str) -> bool:
    return name.endswith(SHARD_SUFFIXES)


def plain_tar_name(name: str) -> str:
    """The name a shard's uncompressed copy takes (what refine writes): x.tar.gz -> x.tar."""
    for suffix in SHARD_SUFFIXES[1:]:
        if name.endswith(suffix):
            return name[: -len(suffix)] + ".tar"
    return name


def declared_shape(where: Location | str) -> tuple[int, int, int] | None:
    """The (C, H, W) a corpus's manifest declares; None where the location is a pattern, a
    single shard or a folder without a (readable) manifest."""
    base = Location.of(where)
    location = base.url
    if (
        location.startswith("pipe:")
        or is_shard_name(location)
        or any(c in location for c in "*?[{")
    ):
        return None
    try:
        return read_manifest(base).image_shape
    except (FileNotFoundError, ValueError, OSError):
        return None  # the readers report what is wrong with the location


def _has_glob(text: str) -> bool:
    return any(c in text for c in "*?[")


def _expand_one(pattern: Location) -> list[str]:
    fs, path = pattern.filesystem()
    if _has_glob(path):
        return sorted(urls.to_url(fs, p) for p in fs.glob(path))
    if is_shard_name(path):  # one HEAD request: brace ranges may name thousands of shards
        return [urls.to_url(fs, path)] if fs.exists(path) else []
    manifest_path = path if urls.basename(path) == MANIFEST_NAME else f"{path}/{MANIFEST_NAME}"
    if fs.exists(manifest_path):
        base = manifest_path.rsplit("/", 1)[0]
        manifest = read_manifest(pattern.at(urls.to_url(fs, manifest_path)))
        return [urls.to_url(fs, f"{base}/{s.name}") for s in manifest.shards]
    if fs.isdir(path):
        found = fs.glob(f"{path.rstrip('/')}/*.t*")  # one listing for every suffix
        return sorted(urls.to_url(fs, p) for p in found if is_shard_name(p))
    if fs.exists(path):
        return [urls.to_url(fs, path)]
    return []


def resolve_shard_urls(where: Location | str, allow_pipe: bool = False) -> list[str]:
    """Shard URLs for a directory or prefix, manifest, brace pattern, glob, or single .tar.

    A directory with a manifest gives its shards in manifest order; one without gives its sorted
    shard files (*.tar and compressed tars, SHARD_SUFFIXES). pipe: URLs run shell commands, so
    they are refused unless allow_pipe is set.
    An unreachable store raises OSError naming the location and the endpoint.
    """
    base = Location.of(where)
    location = base.url
    if location.startswith("pipe:"):
        if not allow_pipe:
            raise InputError(
                f"{location}: pipe: URLs run shell commands; set allow_pipe to use them"
            )
        found = list(braceexpand.braceexpand(location))
        _refuse_repeats(location, found)
        return found
    found = []
    for pattern in braceexpand.braceexpand(location):
        try:
            expanded = _expand_one(base.at(pattern))
        except (FileNotFoundError, ValueError):
            raise
        except Exception as err:  # connection refused, access denied, bad endpoint...
            raise base.at(pattern).error(err) from err
        if not expanded and "{" in location:
            raise FileNotFoundError(f"{location}: expands to {pattern}, which does not exist")
        found.extend(expanded)
    if not found:
        raise FileNotFoundError(f"{location}: no shards found")
    _refuse_repeats(location, found)
    return found


def _refuse_repeats(location: str, shard_urls: list[str]) -> None:
    """A shard named twice (a brace pattern like part-{0,0}.tar, overlapping globs) would be
    read twice per epoch, its keys trained twice as often and refined into one output twice."""
    seen: set[str] = set()
    for url in shard_urls:
        if url in seen:
            raise InputError(f"{location}: names shard {url} more than once")
        seen.add(url)


# ---------------------------------------------------------------------------------------------
# Reading


def iter_tar_samples(shard: Location | str) -> Iterator[dict[str, Any]]:
    """Raw samples of one shard, in order: {"__key__", "__url__", ext: bytes, ...}.

    Opens local and fsspec URLs (s3://...) through Location.open, pipe: through webdataset.gopen.
    A truncated or corrupt tar raises tarfile.ReadError after the samples before the damage.
    """
    register_gopen_schemes()
    shard = Location.of(shard)
    url = shard.url
    stream = webdataset.gopen(url, "rb") if url.startswith("pipe:") else shard.open("rb")
    try:
        yield from iter_tar_stream(stream, url)
    finally:
        stream.close()


def iter_tar_stream(stream: Any, url: str) -> Iterator[dict[str, Any]]:
    """Samples of a tar read from an open binary stream (anything with read(n)), to its end,
    grouped by key as WebDataset does: consecutive members with one key (the name up to its
    first dot) make a sample. Damage raises tarfile.ReadError (see tar_reader), as does a
    member repeated within its sample: the same bytes give the same, so it is damage (the
    samples before it are read), not a failure a rerun could heal."""
    sample: dict[str, Any] | None = None
    members = iter_tar_files(stream)
    while True:
        try:
            member = next(members, None)
        except DamagedMember as err:
            # Damage at the first member of another sample: the one read so far is whole.
            if sample is not None and base_plus_ext(err.name)[0] != sample["__key__"]:
                yield sample
            raise
        if member is None:
            break
        key, suffix = base_plus_ext(member["fname"])
        if key is None:
            continue  # no extension: not a sample's field (WebDataset skips these too)
        suffix = suffix.lower()
        if sample is None or key != sample["__key__"]:
            if sample is not None:
                yield sample
            sample = {"__key__": key, "__url__": url}
        if suffix in sample:
            raise tarfile.ReadError(f"tar member {member['fname']} repeated in sample {key}")
        sample[suffix] = member["data"]
    if sample is not None:
        yield sample
