"""Encoded images: the files' own bytes and sizes in the shards, decoded while streaming;
evaluation's centre crop against Pillow, augmentations seeded per sample and identical
across a resume."""

from __future__ import annotations

import io

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from _image_folders import colour_folder
from PIL import Image

from deepfleet.config import DataSection
from deepfleet.data import (
    ImageTransform,
    ShardStream,
    StreamLoader,
    prepare_from_config,
    read_manifest,
    read_split,
)
from deepfleet.data._decode import decode_image
from deepfleet.errors import UserError


@pytest.fixture(scope="module")
def encoded(tmp_path_factory):
    root = tmp_path_factory.mktemp("encoded")
    files = colour_folder(root / "images")
    section = DataSection(source=str(root / "images"), image_size=[32, 32], shards=2)
    assert section.image_format == "auto"  # images over 64 x 64 pixels: stored encoded
    prepare_from_config(section, root / "data", seed=0)
    return files, read_manifest(root / "data")


def test_shards_hold_the_files_bytes_and_sizes(encoded):
    files, manifest = encoded
    paths = list(files.values())
    assert manifest.raw["features"]["encoding"] == "image"
    assert manifest.sample_shape == (3, 32, 32)
    seen = 0
    for split in manifest.splits:
        for entry in manifest.shards(split):
            table = pq.read_table(manifest.root / entry.file)
            for i, blob, h, w in zip(
                *(table.column(c).to_pylist() for c in ("id", "x", "height", "width")),
                strict=True,
            ):
                assert blob == paths[i].read_bytes()  # as they came, byte for byte
                assert Image.open(paths[i]).size == (w, h)
                seen += 1
    assert seen == len(paths)


def _smooth(h: int, w: int) -> bytes:
    """A PNG of smooth gradients (resampling differences stay small on it)."""
    yy, xx = np.mgrid[0:h, 0:w]
    pixels = np.stack([xx * 255 // w, yy * 255 // h, (xx + yy) * 127 // (h + w)], axis=-1)
    out = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(out, "PNG")
    return out.getvalue()


def test_evaluation_crop_matches_pillow_resize_then_centre_crop():
    """Independent path: Pillow resizes the shorter side to 32 x 256/224, then the centre
    32 x 32 is cropped (torchvision's Resize + CenterCrop recipe)."""
    for h, w in ((70, 45), (41, 90), (64, 64)):
        data = _smooth(h, w)
        got = decode_image(data, "RGB", ImageTransform(size=(32, 32))).astype(np.float32)
        short = round(32 * 256 / 224)
        size = (short, round(h * short / w)) if w <= h else (round(w * short / h), short)
        image = Image.open(io.BytesIO(data)).resize(size, Image.Resampling.BILINEAR)
        left, top = (size[0] - 32) // 2, (size[1] - 32) // 2
        expected = np.asarray(image.crop((left, top, left + 32, top + 32)), np.float32)
        # The recipe rounds the resized size and the crop offset to whole pixels, so its
        # region may sit up to a pixel off the exact centre (the gradients rise ~4 a pixel).
        assert np.abs(got - expected).mean() < 4, (h, w)
    # no resize needed (ratio 1, shorter side = the output's): a plain centre crop, exact
    data = _smooth(48, 32)
    got = decode_image(data, "RGB", ImageTransform(size=(32, 32), resize_ratio=1.0))
    expected = np.asarray(Image.open(io.BytesIO(data)).crop((0, 8, 32, 40)))
    assert np.array_equal(got, expected)


def test_evaluation_split_decodes_to_the_classes_colours(encoded):
    _, manifest = encoded
    test = read_split(manifest, "test")
    assert test.x.shape == (len(test), 3, 32, 32) and test.x.dtype == torch.float32
    colour = test.x.mean(dim=(2, 3))
    assert ((colour[:, 2] > colour[:, 0]) == (test.y == 0)).all()  # blue class is blue


def test_random_crop_flip_and_jitter_are_seeded_per_sample(encoded):
    files, _ = encoded
    data = next(iter(files.values())).read_bytes()
    base = ImageTransform(size=(24, 24), train=True, flip=0.0, seed=5)
    flipped = ImageTransform(size=(24, 24), train=True, flip=1.0, seed=5)
    one = decode_image(data, "RGB", base, base.rng(epoch=2, sample_id=7))
    again = decode_image(data, "RGB", base, base.rng(epoch=2, sample_id=7))
    mirror = decode_image(data, "RGB", flipped, flipped.rng(epoch=2, sample_id=7))
    other_epoch = decode_image(data, "RGB", base, base.rng(epoch=3, sample_id=7))
    assert np.array_equal(one, again) and one.shape == (24, 24, 3)
    assert np.array_equal(mirror, one[:, ::-1])  # the same crop, flipped
    assert not np.array_equal(one, other_epoch)
    jittery = ImageTransform(size=(24, 24), train=True, flip=0.0, brightness=0.5, seed=5)
    bright = decode_image(data, "RGB", jittery, jittery.rng(epoch=2, sample_id=7))
    ratio = bright.astype(float).mean() / one.astype(float).mean()
    assert 0.45 < ratio < 1.55 and abs(ratio - 1) > 1e-3


def _loader(manifest, workers: int) -> StreamLoader:
    transform = ImageTransform(size=(32, 32), train=True, brightness=0.2, seed=11)
    stream = ShardStream(
        manifest, "train", batch_size=4, seed=11, shuffle_buffer=8, transform=transform
    )
    return StreamLoader(stream, num_workers=workers)


@pytest.mark.slow
def test_augmented_batches_are_identical_across_a_resume(encoded):
    _, manifest = encoded
    whole = _loader(manifest, 0)
    whole.set_epoch(1)
    batches, state = [], None
    for k, (x, y) in enumerate(whole):
        batches.append((x.clone(), y.clone(), whole.last_ids.clone()))
        if k == 2:
            state = whole.state_dict()
    resumed = _loader(manifest, 2)  # another number of workers, decoding in processes
    resumed.load_state_dict(state)
    rest = [(x, y, resumed.last_ids.clone()) for x, y in resumed]
    resumed.close()
    assert len(rest) == len(batches) - 3
    for (x, y, ids), (x2, y2, ids2) in zip(batches[3:], rest, strict=True):
        assert torch.equal(ids, ids2) and torch.equal(y, y2) and torch.equal(x, x2)
    whole.set_epoch(2)  # a new epoch draws new crops of the same samples
    second = {int(i): x for x, _ in whole for i, x in zip(whole.last_ids, x, strict=True)}
    first = {int(i): x for x, _, ids in batches for i, x in zip(ids, x, strict=True)}
    assert first.keys() == second.keys()
    assert sum(not torch.equal(first[i], second[i]) for i in first) > len(first) // 2


def test_a_damaged_image_is_one_line_naming_the_sample(tmp_path):
    with pytest.raises(UserError, match="sample 3: not a decodable image"):
        decode_image(b"\xff\xd8\xff" + b"junk" * 10, "RGB", ImageTransform(), where="sample 3")
    png = io.BytesIO()
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(png, "PNG")
    assert decode_image(png.getvalue(), "L", ImageTransform(size=(3, 3))).shape == (3, 3, 1)


def _jpeg(pixels: np.ndarray, mode: str = "RGB") -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(out, "JPEG", quality=90)
    return out.getvalue()


def _gradient(h: int, w: int) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(_smooth(h, w))))


@pytest.mark.parametrize("mode", ["RGB", "L", "CMYK"])
def test_jpeg_pixels_equal_pillows_decoder(mode):
    """A JPEG that needs no resize comes out as Pillow decodes it, pixel for pixel: RGB and
    grey through libjpeg-turbo, CMYK through Pillow itself."""
    rng = np.random.default_rng(0)
    pixels = np.clip(_gradient(40, 56) + rng.normal(0, 10, (40, 56, 3)), 0, 255)
    data = _jpeg(pixels.astype(np.uint8), mode)
    out_mode = "L" if mode == "L" else "RGB"
    got = decode_image(data, out_mode, ImageTransform(size=(40, 56), resize_ratio=1.0))
    expected = np.asarray(Image.open(io.BytesIO(data)).convert(out_mode))
    assert np.array_equal(got, expected.reshape(got.shape))


def test_a_large_jpeg_is_decoded_at_a_reduced_scale_to_the_same_region():
    """A 512 x 384 JPEG cropped to 32 x 32 is decoded at 1/8 scale (libjpeg's DCT scaling);
    the result matches Pillow's full decode resized over the same centre box."""
    data = _jpeg(_gradient(384, 512))
    got = decode_image(data, "RGB", ImageTransform(size=(32, 32), resize_ratio=1.0))
    full = Image.open(io.BytesIO(data)).convert("RGB")
    expected = full.resize((32, 32), Image.Resampling.BILINEAR, box=(64, 0, 448, 384))
    assert np.abs(got.astype(np.float32) - np.asarray(expected, np.float32)).mean() < 3


def test_a_jpeg_over_the_pixel_limit_is_refused_before_decoding():
    data = _jpeg(_gradient(40, 56))
    with pytest.raises(UserError, match="upload 2: 56x40 pixels exceed the limit of 2000"):
        decode_image(data, "RGB", ImageTransform(), where="upload 2", max_pixels=2000)


def test_decoding_in_threads_gives_the_serial_pixels_and_names_the_first_bad_file():
    from deepfleet.data._decode import decode_named

    image = {"mode": "RGB", "size": [24, 24], "resize_ratio": 256 / 224}
    rng = np.random.default_rng(3)
    files = [
        _jpeg(
            np.clip(
                _gradient(30 + k, 50 - k) + rng.normal(0, 20, (30 + k, 50 - k, 3)), 0, 255
            ).astype(np.uint8)
        )
        for k in range(9)
    ]
    names = [f"f{k}" for k in range(9)]
    serial = decode_named(files, image, names, threads=1)
    assert serial.shape == (9, 3, 24, 24)
    assert np.array_equal(decode_named(files, image, names, threads=4), serial)
    broken = list(files)
    broken[6] = broken[2] = b"\xff\xd8\xff" + b"junk" * 10
    for threads in (1, 4):
        with pytest.raises(UserError, match="^f2: not a decodable image"):
            decode_named(broken, image, names, threads=threads)
