"""Shards as users have them: jpg/jpeg/png/webp images and cls/json labels, written by plain
webdataset.TarWriter, read by the training stream, the finite readers and the labeled loader."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds
from PIL import Image

from simgan_dist.data.reader import StreamStats, batch_stream, load_arrays, read_samples
from simgan_dist.eval.classifier import labeled_tensors
from simgan_dist.io.sample_fields import decode_annotations, decode_image


def _digit(index: int) -> np.ndarray:
    img = np.zeros((28, 28), np.uint8)
    img[6:22, 10 + index % 5 : 14 + index % 5] = 200 + index % 50  # a bar: survives JPEG
    return img


def _encoded(img: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format=fmt, **({} if fmt == "PNG" else {"quality": 95}))
    return buf.getvalue()


def _tar(path: Path, ext: str, label_field: str, num: int = 6) -> Path:
    fmt = {"png": "PNG", "jpg": "JPEG", "jpeg": "JPEG", "webp": "WEBP"}[ext]
    with wds.TarWriter(str(path)) as sink:
        for i in range(num):
            sample = {"__key__": f"s{i:03d}", ext: _encoded(_digit(i), fmt)}
            if label_field == "cls":
                sample["cls"] = str(i % 10).encode()
            else:
                sample["json"] = json.dumps({"label": i % 10, "pose": [i, 0]}).encode()
            sink.write(sample)
    return path


@pytest.mark.parametrize(("ext", "label_field"), [("jpg", "cls"), ("jpeg", "json"),
                                                  ("png", "cls"), ("webp", "json")])  # fmt: skip
def test_plain_webdataset_shards_read_with_their_labels(tmp_path, ext, label_field) -> None:
    url = str(_tar(tmp_path / f"{ext}.tar", ext, label_field))
    stats = StreamStats()
    samples = list(read_samples([url], "stop", stats))
    assert [key for key, _, _, _ in samples] == [f"s{i:03d}" for i in range(6)]
    assert [meta["label"] for _, _, meta, _ in samples] == [i % 10 for i in range(6)]
    channels = 3 if ext == "webp" else 1  # WebP has no grayscale: it decodes as RGB
    for i, (_, img, _, _) in enumerate(samples):
        gray = img if img.ndim == 2 else img[..., 0]
        assert np.abs(gray.astype(int) - _digit(i)).max() <= (0 if ext == "png" else 40)
    assert stats.num_skipped == 0
    images, metas = next(batch_stream([url], 4, (channels, 28, 28), seed=0, shuffle_window=1))
    assert images.shape == (4, channels, 28, 28) and all("label" in m for m in metas)
    if channels == 1:
        x, y, keys = labeled_tensors(url)
        assert x.shape == (6, 1, 28, 28) and y.tolist() == [i % 10 for i in range(6)]


def test_a_png_named_jpg_and_a_contradicting_cls_are_bad_samples(tmp_path) -> None:
    png = _encoded(_digit(0), "PNG")
    with pytest.raises(ValueError, match="not a JPEG image"):
        decode_image({"jpg": png})
    with pytest.raises(ValueError, match="no image in sample"):
        decode_image({"json": b"{}", "__key__": "k"})
    with pytest.raises(ValueError, match="cls says 3, json's label says 4"):
        decode_annotations({"cls": b"3", "json": b'{"label": 4}'})
    with pytest.raises(ValueError, match="cls is not an integer"):
        decode_annotations({"cls": b"three"})
    assert decode_annotations({"cls": b" 7\n", "json": b'{"pose": 1}'}) == {"pose": 1, "label": 7}
    path = tmp_path / "mixed.tar"
    with wds.TarWriter(str(path)) as sink:
        sink.write({"__key__": "good", "jpg": _encoded(_digit(1), "JPEG"), "cls": b"1"})
        sink.write({"__key__": "fake", "jpg": png, "cls": b"2"})
        sink.write({"__key__": "cut", "jpg": _encoded(_digit(2), "JPEG")[:200], "cls": b"2"})
    stats = StreamStats()
    images, metas = load_arrays(str(path), stats=stats)
    assert [m["__key__"] for m in metas] == ["good"]
    assert stats.num_skipped == 2
