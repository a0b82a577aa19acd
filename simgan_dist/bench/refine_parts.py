"""Where a refine worker's time goes per image, and what a node can refine from those parts.

The parts are measured in this process on one CPU thread: decode (PNG bytes -> the float batch
the refiner takes) and encode (a refined uint8 image -> PNG bytes), against the forward pass on
the worker's device (bench refine's bare figure). A node with G GPUs runs the forwards on the GPUs
and decodes and encodes on its C CPUs (each worker's reader and writer threads), so it refines
min(G x forward, C x codec) images/s: the GPUs stay busy only while the CPUs keep up, which takes
forward / codec cores per GPU. A CPU-only node spends decode, forward and encode time on the same
cores. The projection assumes the parts add up as measured (no store, network or scheduling
costs: the end-to-end figure shows those on this machine)."""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from simgan_dist.io.sample_fields import image_field
from simgan_dist.io.shardio import decode_png, encode_png, iter_tar_samples
from simgan_dist.model.pixels import to_batch

PART_SECONDS = 2.0  # per part: thousands of small images, so the rate is steady


def _rate(work: list[Any], run: Any, seconds: float) -> float:
    """Items per second of run(item) over work, repeated until seconds have passed."""
    started, done = time.perf_counter(), 0
    while done < len(work) or time.perf_counter() - started < seconds:
        run(work[done % len(work)])
        done += 1
    return done / (time.perf_counter() - started)


def codec_rates(shard_url: str, seconds: float | None = None) -> dict[str, float]:
    """Decode and encode images/s on one CPU thread, on the shard's own samples, each timed
    for seconds (PART_SECONDS)."""
    seconds = PART_SECONDS if seconds is None else seconds
    raw = [sample[image_field(sample)] for sample in iter_tar_samples(shard_url)]
    decoded = [decode_png(data) for data in raw]
    decode = _rate(raw, lambda data: to_batch([decode_png(data)]), seconds)
    encode = _rate(decoded, lambda img: encode_png(np.asarray(img)), seconds)
    return {
        "decode_images_per_s": decode,
        "encode_images_per_s": encode,
        "codec_images_per_s": 1.0 / (1.0 / decode + 1.0 / encode),
    }


def node_projection(
    codec_per_core: float,
    forward_per_worker: float,
    threads_per_worker: int,
    num_cpus: int,
    num_gpus: int,
) -> dict[str, Any]:
    """Images/s of a node from the measured parts (see the module doc), and what bounds it."""
    if num_gpus:
        gpus, cpus = num_gpus * forward_per_worker, num_cpus * codec_per_core
        return {
            "node_images_per_s": min(gpus, cpus),
            "bound_by": "GPU forward" if gpus <= cpus else "CPU decode/encode",
            "cores_to_keep_one_gpu_busy": math.ceil(forward_per_worker / codec_per_core),
            "codec_to_forward": forward_per_worker / codec_per_core,
        }
    # CPU only: core-seconds per image of the codec plus the forward (on threads_per_worker).
    forward_core_s = threads_per_worker / forward_per_worker
    return {
        "node_images_per_s": num_cpus / (1.0 / codec_per_core + forward_core_s),
        "bound_by": "CPU",
        "cores_to_keep_one_gpu_busy": None,
        "codec_to_forward": (1.0 / codec_per_core) / forward_core_s,
    }


def format_parts(parts: dict[str, Any]) -> list[str]:
    p = parts["projection"]
    lines = [
        f"per image on one CPU thread: decode {parts['decode_images_per_s']:.0f} images/s, "
        f"encode {parts['encode_images_per_s']:.0f} images/s (both: "
        f"{parts['codec_images_per_s']:.0f}); codec / forward time {p['codec_to_forward']:.2f}",
        f"projected for a node of {parts['node_cpus']} CPUs and {parts['node_gpus']} GPUs: "
        f"{p['node_images_per_s']:.0f} images/s, bound by {p['bound_by']}",
    ]
    if p["cores_to_keep_one_gpu_busy"] is not None:
        lines.append(f"CPU cores that keep one GPU busy: {p['cores_to_keep_one_gpu_busy']}")
    return lines
