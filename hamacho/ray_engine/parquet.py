"""Result rows as Arrow tables: the checkpoint's parts and results.parquet (the columns of results.csv)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hamacho.files import atomic_path
from hamacho.results.types import RESULT_COLUMNS, ImageResult

SCORES = ("raw_score", "normalized_score")


def rows_table(rows: Sequence[ImageResult], indices: Sequence[int] | None = None, nulls: bool = False) -> Any:
    """An Arrow table of ``rows`` (columns of results.csv; scores float64, exactly the rows' floats).

    Args:
        rows: Result rows.
        indices: Each row's place in the run, as a first column ``index`` (the checkpoint's parts).
        nulls: Unreadable images' scores as nulls rather than NaN (results.parquet, for SQL engines).
    """
    import pyarrow as pa

    columns: dict[str, Any] = {} if indices is None else {"index": pa.array(list(indices), pa.int64())}
    for name in RESULT_COLUMNS:
        values = [getattr(row, name) for row in rows]
        if name in SCORES:
            columns[name] = pa.array([None if nulls and math.isnan(v) else v for v in values], pa.float64())
        else:
            columns[name] = pa.array(values, pa.string())
    return pa.table(columns)


def table_rows(table: Any) -> list[ImageResult]:
    """The rows of a table written by :func:`rows_table` (NaN or null scores both read as NaN)."""
    data = table.select(list(RESULT_COLUMNS)).to_pydict()
    for name in SCORES:
        data[name] = [math.nan if v is None else v for v in data[name]]
    columns = [data[name] for name in RESULT_COLUMNS]
    return [ImageResult(**dict(zip(RESULT_COLUMNS, values))) for values in zip(*columns)]


def write_table(path: str | Path, table: Any) -> Path:
    """Write an Arrow table as Parquet, atomically (readers never see half a file)."""
    import pyarrow.parquet as pq

    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return Path(path)


def write_results_parquet(path: str | Path, rows: Sequence[ImageResult]) -> Path:
    """results.parquet: the rows of results.csv, in its order; unreadable images' scores are null."""
    return write_table(path, rows_table(rows, nulls=True))
