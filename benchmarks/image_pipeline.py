"""Encoded JPEG images: prepare against LitData's optimize(), and streaming decode + random-
resized crop against an ImageFolder-style DataLoader and LitData's StreamingDataset.

Data: N generated JPEG files (smooth colour fields plus noise, so they compress like photos;
sizes drawn in 160..320 px a side, about 224 x 224 on average; quality 90), in 10 class
folders. All in one run, on the same files, with the same number of workers:
  prepare   `deepfleet prepare DIR --image-format encoded --image-size 224 224` (the files'
            bytes are stored as they are)  vs  litdata.optimize() of the same files (the
            files' bytes too); wall time, peak RSS and PSS of the tree
  stream    shuffled training samples, batch 64, each sample decoded,
            random-resized-cropped to 224 x 224 (scale 0.08..1, ratio 3/4..4/3), flipped,
            and handed over as float32 / 255:
              deepfleet  StreamLoader(ShardStream(..., transform=ImageTransform(train=True)))
              folder     a map-style Dataset over the files (torchvision's ImageFolder recipe:
                         PIL open, RGB, RandomResizedCrop.get_params, crop + resize) under
                         torch's DataLoader (torchvision itself has no wheel for this torch)
              litdata    StreamingDataset(transform=the same PIL crop) + StreamingDataLoader
            rounds of turns interleave the three in a rotating order (epochs run on); a
            turn first waits a second, so the other loaders' workers finish refilling
            their queues and steal no CPU from it, takes the batches its own workers
            prefetched meanwhile untimed, then times 24 batches; the median turn rate of
            each is compared.
Writes benchmarks/results/image_pipeline.json.

Run: python benchmarks/image_pipeline.py [--images 50000] [--workers 2] [--rounds 8]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _tree_rss import run_measured  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BATCH, SIZE = 64, (224, 224)
TURN_BATCHES = 24  # batches a loader is timed over per turn
SETTLE_S = 1.0  # idle before a turn: every other loader's prefetch queue is full by then


def write_jpegs(folder: Path, n: int, seed: int = 0) -> list[tuple[str, int]]:
    from PIL import Image

    rng = np.random.default_rng(seed)
    files = []
    for i in range(n):
        label = i % 10
        h, w = (int(v) for v in rng.integers(160, 321, 2))
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        base = rng.uniform(0, 255, 3)
        slope = rng.uniform(-1, 1, (3, 2))
        pixels = np.stack(
            [base[c] + slope[c, 0] * yy + slope[c, 1] * xx for c in range(3)], axis=-1
        )
        pixels += rng.normal(0, 12, pixels.shape)
        path = folder / f"class{label}" / f"{i:06d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path, quality=90)
        files.append((str(path), label))
    return files


def _litdata_item(item):
    # The file's bytes, stored as they are (as deepfleet does); LitData's own JPEG serializer
    # also stores them but decodes with torchvision, which does not load here.
    path, label = item
    return {"image": Path(path).read_bytes(), "label": label}


def litdata_optimize(files_json: str, out: str, workers: int) -> None:
    import litdata

    files = [tuple(f) for f in json.loads(Path(files_json).read_text())]
    litdata.optimize(
        fn=_litdata_item,
        inputs=files,
        output_dir=out,
        num_workers=workers,
        chunk_bytes="64MB",
        verbose=False,
    )


def pil_random_resized_crop(image, rng):
    """torchvision's RandomResizedCrop on a PIL image: the box, then crop + resize."""
    from PIL import Image

    from deepfleet.data._augment import _random_resized_box

    box = _random_resized_box(image.height, image.width, (0.08, 1.0), (3 / 4, 4 / 3), rng)
    image = image.convert("RGB").resize(SIZE[::-1], Image.Resampling.BILINEAR, box=box)
    if rng.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return np.asarray(image).transpose(2, 0, 1).copy()


class FolderDataset:
    """torchvision.datasets.ImageFolder + RandomResizedCrop + flip, in plain PIL."""

    def __init__(self, files):
        self.files = files

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        import torch
        from PIL import Image

        path, label = self.files[i]
        rng = np.random.default_rng([7, i, int(time.time_ns() % 1000)])
        with Image.open(path) as image:
            return torch.from_numpy(pil_random_resized_crop(image, rng)), label


def _litdata_transform(item):
    import io

    import torch
    from PIL import Image

    rng = np.random.default_rng()
    with Image.open(io.BytesIO(item["image"])) as image:
        return torch.from_numpy(pil_random_resized_crop(image, rng)), item["label"]


def forever(loader, epochs_from: int = 0):
    """Batches of epoch after epoch (a StreamLoader is moved to each new epoch)."""
    epoch = epochs_from
    while True:
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)
        yield from loader
        epoch += 1


def turn_rate(batches, count: int, prefetched: int) -> float:
    """Images per second over `count` batches (float32 / 255 in this process), after the
    `prefetched` ones the loader's workers made while the others ran."""
    import torch

    time.sleep(SETTLE_S)
    for _ in range(prefetched):
        next(batches)
    started, images = time.perf_counter(), 0
    for _ in range(count):
        x, _ = next(batches)
        x = x.to(torch.float32).div_(255) if x.dtype == torch.uint8 else x
        images += len(x)
    return images / (time.perf_counter() - started)


def stream_rates(data: Path, lit: Path, files, workers: int, rounds: int) -> dict:
    import torch
    from litdata import StreamingDataLoader, StreamingDataset
    from torch.utils.data import DataLoader

    from deepfleet.data import ImageTransform, ShardStream, StreamLoader, read_manifest

    manifest = read_manifest(data)
    train_ids = set()
    for entry in manifest.shards("train"):
        import pyarrow.parquet as pq

        train_ids.update(pq.read_table(data / entry.file, columns=["id"])["id"].to_pylist())
    folder_files = [files[i] for i in sorted(train_ids)]
    transform = ImageTransform(size=SIZE, train=True, seed=0)
    ours = StreamLoader(
        ShardStream(manifest, "train", batch_size=BATCH, transform=transform),
        num_workers=workers,
    )
    folder = DataLoader(
        FolderDataset(folder_files),
        batch_size=BATCH,
        shuffle=True,
        num_workers=workers,
        persistent_workers=workers > 0,
    )
    lit_set = StreamingDataset(str(lit), shuffle=True, transform=_litdata_transform)
    litl = StreamingDataLoader(lit_set, batch_size=BATCH, num_workers=workers)
    rates: dict[str, list[float]] = {"deepfleet": [], "folder": [], "litdata": []}
    torch.set_num_threads(1)
    streams = {"deepfleet": forever(ours), "folder": forever(folder), "litdata": forever(litl)}
    names = list(streams)
    for r in range(rounds + 1):  # round 0 warms up (workers start, files cached)
        # Short turns, the order rotated every round: a busy neighbour hits all three alike.
        for name in names[r % 3 :] + names[: r % 3]:
            rate = turn_rate(streams[name], TURN_BATCHES, prefetched=2 * workers)
            print(f"round {r} {name}: {rate:,.0f} images/s", flush=True)
            if r:
                rates[name].append(round(rate, 1))
    ours.close()
    return {
        "train_images": len(folder_files),
        "litdata_images": len(lit_set),
        "images_per_s_all": rates,
        "images_per_s_median": {k: statistics.median(v) for k, v in rates.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=50_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/image_pipeline.json")
    args = parser.parse_args()
    from deepfleet.devices import describe_machine

    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    work = Path(tempfile.mkdtemp(prefix="deepfleet-bench-img-"))
    try:
        files = write_jpegs(work / "images", args.images)
        (work / "files.json").write_text(json.dumps(files))
        mb = sum(Path(p).stat().st_size for p, _ in files) / 1e6
        print(f"{args.images} JPEGs, {mb:.0f} MB", flush=True)
        prepare = {
            "deepfleet": run_measured(
                [
                    sys.executable,
                    "-m",
                    "deepfleet",
                    "prepare",
                    f"images:{work / 'images'}",
                    "--out",
                    str(work / "data"),
                    "--image-format",
                    "encoded",
                    "--image-size",
                    "224",
                    "224",
                    "--shards",
                    "8",
                    "--val",
                    "0",
                    "--test",
                    "0",
                    "--workers",
                    str(args.workers),
                ],
                env,
            ),
            "litdata": run_measured(
                [
                    sys.executable,
                    __file__,
                    "--optimize",
                    str(work / "files.json"),
                    str(work / "lit"),
                    str(args.workers),
                ],
                env,
            ),
        }
        print(json.dumps(prepare), flush=True)
        stream = stream_rates(work / "data", work / "lit", files, args.workers, args.rounds)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    best = max(v for k, v in stream["images_per_s_median"].items() if k != "deepfleet")
    result = {
        "benchmark": "generated JPEG files: prepare vs litdata.optimize; streaming decode + "
        "random-resized crop to 224 vs an ImageFolder-style DataLoader and LitData",
        "images": args.images,
        "jpeg_mb": round(mb, 1),
        "workers": args.workers,
        "batch_size": BATCH,
        "turn_batches": TURN_BATCHES,
        "settle_s": SETTLE_S,
        "prepare": prepare,
        "prepare_wall_ratio_vs_litdata": round(
            prepare["deepfleet"]["wall_s"] / prepare["litdata"]["wall_s"], 2
        ),
        "stream": stream,
        "stream_ratio_vs_best_baseline": round(
            stream["images_per_s_median"]["deepfleet"] / best, 2
        ),
        "target": "stream >= 1.5x the best baseline",
        "machine": describe_machine(),
        "note": "shared 2-core machine; torchvision has no wheel for this torch (its CUDA "
        "build fails to load against the CPU torch), so the ImageFolder baseline is its "
        "recipe in PIL. Full size: python benchmarks/image_pipeline.py --images 50000",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(
        json.dumps(
            {
                k: result[k]
                for k in ("prepare_wall_ratio_vs_litdata", "stream_ratio_vs_best_baseline")
            }
        )
    )


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--optimize":
        litdata_optimize(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        main()
