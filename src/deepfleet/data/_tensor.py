"""The `x` column: one fixed-shape tensor per row, stored as its raw row-major bytes.

Each value is a Parquet FIXED_LEN_BYTE_ARRAY of exactly one sample's bytes; the dtype and
shape ride in the column's Arrow field metadata (and in manifest.json). Arrow's
fixed_shape_tensor extension type is stored by Parquet as a LIST with a repetition level per
element, which decodes more than ten times slower; raw bytes decode with one memcpy and read
back as a NumPy view. Any Parquet reader sees a fixed-size binary column it can reinterpret.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa

from deepfleet.errors import UserError

COLUMN = "x"


def tensor_field_array(x: np.ndarray, name: str = COLUMN) -> tuple[pa.Field, pa.Array]:
    """The field (dtype and shape in its metadata) and the values of an N x ... array."""
    x = np.ascontiguousarray(x)
    shape = list(x.shape[1:])
    width = int(np.prod(shape)) * x.dtype.itemsize
    values = pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(width), len(x), [None, pa.py_buffer(x.reshape(-1).view(np.uint8))]
    )
    field = pa.field(
        name,
        pa.binary(width),
        nullable=False,
        metadata={
            "deepfleet.dtype": x.dtype.str.replace("|", ""),  # e.g. u1, <f4 (byte order kept)
            "deepfleet.shape": json.dumps(shape),
            "deepfleet.layout": "row-major",
        },
    )
    return field, values


def describe(dtype: np.dtype, shape: list[int]) -> str:
    """The schema line in manifest.json."""
    width = int(np.prod(shape)) * np.dtype(dtype).itemsize
    return f"fixed_size_binary[{width}]: one {np.dtype(dtype).name} tensor {shape}, row-major"


def tensor_values(table: pa.Table, name: str = COLUMN) -> np.ndarray:
    """A tensor column (`x`, or a vector `label`) as an N x ... array (a view of Arrow's
    buffer when it is one chunk)."""
    field = table.schema.field(name)
    column = table.column(name).combine_chunks()
    if isinstance(field.type, pa.FixedShapeTensorType):  # shards written by deepfleet < 0.2
        return column.to_numpy_ndarray()
    meta = field.metadata or {}
    try:
        dtype = np.dtype(meta[b"deepfleet.dtype"].decode())
        shape = json.loads(meta[b"deepfleet.shape"])
    except (KeyError, ValueError, TypeError):
        raise UserError(f"shard column {name} has no deepfleet dtype/shape metadata") from None
    width = column.type.byte_width
    raw = np.frombuffer(
        column.buffers()[1], np.uint8, count=len(column) * width, offset=column.offset * width
    )
    values = raw.view(dtype).reshape(len(column), *shape)
    return values if dtype.isnative else values.astype(dtype.newbyteorder("="))
