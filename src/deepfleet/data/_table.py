"""A Parquet or CSV table: numeric feature columns and one label column (pyarrow readers)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from deepfleet.data._samples import Samples
from deepfleet.errors import UserError

SUFFIXES = (".parquet", ".pq", ".csv")


def _read(path: Path) -> pa.Table:
    try:
        if path.suffix.lower() == ".csv":
            return pacsv.read_csv(path)
        return pq.read_table(path)
    except (pa.ArrowException, OSError) as err:
        raise UserError(f"{path}: cannot read the table ({str(err).splitlines()[0]})") from None


def load_table(path: str | Path, label_column: str = "label") -> Samples:
    """Every column but the target columns (label_column; several, comma-separated, make
    a vector per row) and an integer `id` column (kept as ids) is a feature."""
    path = Path(path)
    table = _read(path)
    targets = [c.strip() for c in label_column.split(",") if c.strip()]
    missing = [c for c in targets if c not in table.column_names]
    if missing or not targets:
        raise UserError(
            f"{path}: no label column {(missing or [label_column])[0]!r} (columns: "
            f"{', '.join(table.column_names)}); set data.label_column"
        )
    features = [c for c in table.column_names if c not in (*targets, "id")]
    if not features:
        raise UserError(f"{path}: no feature columns besides {', '.join(targets)}")
    for name in [*targets, *features]:
        column = table.column(name)
        if column.null_count:
            raise UserError(f"{path}: column {name!r} has {column.null_count} empty values")
        if name not in targets and not (
            pa.types.is_integer(column.type) or pa.types.is_floating(column.type)
        ):
            raise UserError(f"{path}: feature column {name!r} is {column.type}, not numeric")
    x = np.stack([table.column(c).to_numpy().astype(np.float32) for c in features], axis=1)
    columns = [table.column(c).to_numpy(zero_copy_only=False) for c in targets]
    y = columns[0] if len(columns) == 1 else np.stack(columns, axis=1)
    ids = None
    if "id" in table.column_names and pa.types.is_integer(table.column("id").type):
        ids = table.column("id").to_numpy().astype(np.int64)
        if len(np.unique(ids)) != len(ids):
            raise UserError(f"{path}: column 'id' has repeated values")
    return Samples(
        x=x,
        y=y,
        class_names=None,  # the task encodes y
        target_names=targets if len(targets) > 1 else None,
        targets_from=f"{path}: column {label_column!r}",
        ids=ids,
        description=f"table {path.name}: {len(y)} rows, {len(features)} features "
        f"({', '.join(features[:8])}{', ...' if len(features) > 8 else ''})",
    )
