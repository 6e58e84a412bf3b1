from typing import Literal

from pydantic import Field, field_validator, model_validator

from deepfleet.config._augment import AugmentSection
from deepfleet.config._base import Section


class DataSection(Section):
    """[data]: where samples come from, how they are split into shards, and how they are read."""

    source: str = Field(
        "digits",
        description="Built-in source name (digits, diabetes, python-stdlib), a path "
        "(MNIST/Fashion-MNIST IDX folder, CIFAR-10 binary folder or archive, image folder, "
        ".npz, .npy, .parquet, .csv), text:PATH for .txt / .jsonl files or folders of them, "
        "or KIND:PATH to name the kind.",
    )
    prepared: str | None = Field(
        None,
        description="A folder or URL (s3://bucket/prefix) already written by `deepfleet "
        "prepare`; used as is.",
    )
    storage_options: dict[str, str | int | float] = Field(
        default_factory=dict,
        description="Settings of remote data URLs: endpoint_url (e.g. http://127.0.0.1:8333; "
        "default $AWS_ENDPOINT_URL), region, connect_timeout, request_timeout. Never "
        "credentials: they come from the AWS variables, ~/.aws or the instance role.",
    )
    cache_dir: str | None = Field(
        None,
        description="Node-local cache of remote shards, shared by the node's ranks "
        "(default $DEEPFLEET_CACHE/shards or ~/.cache/deepfleet/shards).",
    )
    cache_limit: int | str = Field(
        "20GB",
        description="Bytes the shard cache may hold (e.g. 20GB, 512MiB); least recently "
        "used shards are evicted. Needs room for about 3 shards per reading process "
        "(each rank and DataLoader worker).",
    )
    shards: int = Field(4, gt=0, description="Number of training shards to write.")
    val_fraction: float = Field(0.1, ge=0, lt=1, description="Share of samples for validation.")
    test_fraction: float = Field(
        0.2,
        ge=0,
        lt=1,
        description="Share of samples for testing (ignored when the source has its own test set).",
    )
    label_column: str = Field(
        "label",
        min_length=1,
        description="Table sources: the column holding the targets; several, comma-separated, "
        "for multilabel or multi-output regression.",
    )
    seq_len: int = Field(
        128, gt=1, description="Text sources: tokens per packed training sequence."
    )
    vocab_size: int = Field(
        4096,
        ge=260,
        le=65536,
        description="Text sources: size of the byte-level BPE vocabulary trained on the corpus.",
    )
    tokenizer: str | None = Field(
        None, description="Text sources: a tokenizer.json to use instead of training one."
    )
    max_bytes: int | None = Field(
        None, gt=0, description="Text sources: read at most this many bytes of text."
    )
    image_size: list[int] | None = Field(
        None,
        min_length=2,
        max_length=2,
        description="Image folders: resize every image to [height, width].",
    )
    image_format: Literal["auto", "decoded", "encoded"] = Field(
        "auto",
        description="Image folders: how images are stored. decoded: uint8 pixels at one "
        "size (image_size, or the images' common size); encoded: the files' own JPEG / PNG / "
        "WebP bytes, any size, decoded while streaming to image_size (default 224 x 224); "
        "auto: decoded when every image has at most 64 x 64 pixels, else encoded.",
    )
    workers: int | None = Field(
        None,
        gt=0,
        description="Processes writing shards (default: one per core; one below 16 MiB).",
    )
    key: str | None = Field(
        None,
        description="Data key for encryption at rest: a key file (from `deepfleet keys "
        "new`) or env:NAME. prepare encrypts the shards with it; training reads them with it.",
    )
    uneven: Literal["pad", "drop"] = Field(
        "pad",
        description="When samples do not divide among ranks: pad repeats a few, drop "
        "skips the tail; every rank gets the same number of batches either way.",
    )
    shuffle_buffer: int = Field(
        8192, gt=0, description="Samples shuffled together while streaming (whole batches)."
    )
    cache: bool = Field(False, description="Keep decoded shards in memory (small data sets).")
    augment: AugmentSection = Field(default_factory=AugmentSection)

    @field_validator("storage_options")
    @classmethod
    def _no_credentials(cls, value: dict) -> dict:
        if value:
            from deepfleet.storage._url import credential_problem

            problem = credential_problem(value)
            if problem:
                raise ValueError(problem)
        return value

    @field_validator("cache_limit")
    @classmethod
    def _a_size(cls, value: int | str) -> int | str:
        from deepfleet.errors import UserError
        from deepfleet.storage._settings import parse_bytes

        try:
            parse_bytes(value)
        except UserError as err:
            raise ValueError(str(err)) from None
        return value

    @model_validator(mode="after")
    def _fractions_leave_training_data(self) -> "DataSection":
        if self.val_fraction + self.test_fraction >= 1:
            raise ValueError(
                "val_fraction + test_fraction must be < 1, got "
                f"{self.val_fraction} + {self.test_fraction}"
            )
        if self.image_size is not None and min(self.image_size) <= 0:
            raise ValueError(f"image_size must be two sizes > 0, got {self.image_size}")
        return self
