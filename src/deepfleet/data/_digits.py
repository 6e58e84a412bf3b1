"""The built-in default source: scikit-learn's bundled 8x8 handwritten digits (1,797 images)."""

from __future__ import annotations

import numpy as np

from deepfleet.data._samples import Samples


def load_digits_samples() -> Samples:
    from sklearn.datasets import load_digits  # imported here: scikit-learn is slow to import

    bunch = load_digits()
    # Pixel values are integers 0..16; keep them as uint8 and scale at read time.
    images = bunch.images.astype(np.uint8)[:, None, :, :]
    return Samples(
        x=images,
        y=bunch.target,
        class_names=[str(c) for c in bunch.target_names],
        description="scikit-learn digits: 1,797 8x8 grey images of handwritten digits 0-9",
        scale=1.0 / 16.0,
    )
