"""Built-in sources from scikit-learn's bundled data: the 8x8 handwritten digits (1,797
images, the default) and the diabetes regression data."""

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


def load_diabetes_samples() -> Samples:
    """scikit-learn's bundled diabetes data: 442 patients, 10 standardised features, and a
    measure of disease progression one year later (a regression target)."""
    from sklearn.datasets import load_diabetes

    bunch = load_diabetes()
    return Samples(
        x=bunch.data.astype(np.float32),
        y=bunch.target.astype(np.float32),
        class_names=None,  # the task encodes the target
        target_names=["progression"],
        description="scikit-learn diabetes: 442 patients, 10 features, disease progression",
    )
