"""[data.augment]: how encoded images are augmented while streaming (training only)."""

from pydantic import Field, model_validator

from deepfleet.config._base import Section


class AugmentSection(Section):
    """[data.augment]: augmentations of encoded images (data.image_format = "encoded"), drawn
    per sample from (run.seed, epoch, sample id) while streaming, so a resumed epoch sees the
    same batches. Training takes a random-resized crop to the data's image size, a flip and
    a colour jitter; validation, evaluation, predict and serve resize the shorter side to
    256/224 of the size and take the centre crop. mean and std normalise every stage's input
    and are recorded in the bundle's preprocessing."""

    enabled: bool = Field(
        True, description="Augment training batches (false: training sees the centre crop too)."
    )
    crop_scale: list[float] = Field(
        [0.08, 1.0],
        min_length=2,
        max_length=2,
        description="Random-resized crop: range of the crop's share of the image's area.",
    )
    crop_ratio: list[float] = Field(
        [3 / 4, 4 / 3],
        min_length=2,
        max_length=2,
        description="Random-resized crop: range of the crop's aspect ratio (width / height).",
    )
    flip: float = Field(0.5, ge=0, le=1, description="Probability of a horizontal flip.")
    brightness: float = Field(
        0.0, ge=0, lt=1, description="Colour jitter: brightness factor drawn in [1 - b, 1 + b]."
    )
    contrast: float = Field(
        0.0, ge=0, lt=1, description="Colour jitter: contrast factor drawn in [1 - c, 1 + c]."
    )
    saturation: float = Field(
        0.0, ge=0, lt=1, description="Colour jitter: saturation factor drawn in [1 - s, 1 + s]."
    )
    mean: list[float] | None = Field(
        None,
        description="Per-channel mean subtracted after scaling to 0..1 (e.g. ImageNet's "
        "[0.485, 0.456, 0.406]); with std.",
    )
    std: list[float] | None = Field(
        None, description="Per-channel standard deviation the input is divided by; with mean."
    )

    @model_validator(mode="after")
    def _ranges(self) -> "AugmentSection":
        low, high = self.crop_scale
        if not 0 < low <= high <= 1:
            raise ValueError(f"crop_scale must be 0 < low <= high <= 1, got {self.crop_scale}")
        if not 0 < self.crop_ratio[0] <= self.crop_ratio[1]:
            raise ValueError(f"crop_ratio must be 0 < low <= high, got {self.crop_ratio}")
        if (self.mean is None) != (self.std is None):
            raise ValueError("mean and std go together: give both or neither")
        if self.std is not None and (len(self.std) != len(self.mean or []) or min(self.std) <= 0):
            raise ValueError("std must be > 0, one value per channel like mean")
        return self
