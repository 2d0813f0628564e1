"""Trajectory tables as Parquet files: the format users bring their data sets in.

One row per data-set row (the row convention of docs/datasets.md), seven columns:

========================  ==============================================================
``episode``               int64
``step``                  int64
``observation``           fixed_size_list<float32>[prod(obs_shape)] (flattened; the spec
                          keeps the shape)
``action``                int64 (discrete index) or fixed_size_list<float32>[action_dim]
``reward``                float32
``terminated``            bool
``truncated``             bool
========================  ==============================================================

The spec (``TableSpec``) is stored in the file's key-value metadata under ``worldflux.spec`` as
sorted-key JSON; a third-party file without it is read with a JSON spec file beside it (the
same keys). pyarrow does all reading and writing. The expectation suite
(``quality.expectations.validate_table``) checks the raw table in chunks before anything here
builds a ``TrajectoryDataset`` from it (``load_table``), so a bad file is reported row by row
instead of failing in the data-set constructor. See docs/quality-expectations.md.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

# No pandas-stubs in this environment (and pyproject's ignore list does not name pandas).
import pandas as pd
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.compute as pc  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]

if TYPE_CHECKING:
    # worldflux is imported where it is used: importing it loads torch (about 1.5 s), which
    # reading a table's spec, validating or digesting it does not need.
    from worldflux.data.dataset import DatasetSpec, TrajectoryDataset

__all__ = [
    "FORMAT_VERSION",
    "SPEC_KEY",
    "TABLE_COLUMNS",
    "TableError",
    "TableSpec",
    "TableWriter",
    "dataset_batch",
    "export_table",
    "iter_row_groups",
    "load_table",
    "open_parquet",
    "read_table_spec",
    "stream_rows",
    "table_digest",
    "table_schema",
]

SPEC_KEY = "worldflux.spec"
FORMAT_VERSION = 1
# The file's column order (key columns first, so a printed row reads naturally).
TABLE_COLUMNS = ("episode", "step", "observation", "action", "reward", "terminated", "truncated")
_SPEC_FIELDS = (
    "name",
    "obs_shape",
    "discrete",
    "action_dim",
    "action_low",
    "action_high",
    "source",
    "licence",
)
# Fixed writer options: the same data gives the same bytes (Parquet stores no timestamps; the
# footer names the writing library, "parquet-cpp-arrow version X", so bytes are stable for a
# given pyarrow version).
_WRITER_OPTIONS: dict[str, Any] = {
    "version": "2.6",
    "compression": "zstd",
    "compression_level": 3,
    "use_dictionary": False,
    "write_statistics": True,
    "data_page_version": "1.0",
    "store_schema": True,
    "write_page_index": False,
    "write_page_checksum": False,
}
# Rows read at a time when streaming one column (table_digest) or the whole table (iter_...):
# sized by bytes so pixel tables do not load a 3 GB row group at once.
_STREAM_BYTES = 64 << 20

Array = npt.NDArray[Any]


class TableError(ValueError):
    """A file that is not a readable trajectory table. The message names the file and what to
    do about it."""


# ------------------------------------------------------------------------------------ spec
@dataclass(frozen=True)
class TableSpec:
    """What a trajectory table holds: the data-set spec plus its name, source and licence.

    Every field is checked on construction; a bad one raises TableError naming the key.
    """

    name: str
    obs_shape: tuple[int, ...]
    discrete: bool
    action_dim: int
    action_low: float
    action_high: float
    source: str
    licence: str

    def __post_init__(self) -> None:
        for key in ("name", "source", "licence"):
            value = getattr(self, key)
            if not isinstance(value, str) or not value.strip():
                raise TableError(f"spec key {key!r} must be a non-empty string, got {value!r}")
        shape = self.obs_shape
        if (
            not isinstance(shape, (list, tuple))
            or not shape
            or not all(_is_int(d) and d > 0 for d in shape)
        ):
            raise TableError(f"spec key 'obs_shape' must be a list of positive ints, got {shape!r}")
        object.__setattr__(self, "obs_shape", tuple(int(d) for d in shape))
        if not isinstance(self.discrete, bool):
            raise TableError(f"spec key 'discrete' must be true or false, got {self.discrete!r}")
        if not _is_int(self.action_dim) or self.action_dim < 1:
            raise TableError(f"spec key 'action_dim' must be an int >= 1, got {self.action_dim!r}")
        object.__setattr__(self, "action_dim", int(self.action_dim))
        for key in ("action_low", "action_high"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
                raise TableError(f"spec key {key!r} must be a number, got {value!r}")
            if not math.isfinite(float(value)):
                raise TableError(f"spec key {key!r} must be finite, got {value!r}")
            object.__setattr__(self, key, float(value))
        if not self.action_low < self.action_high:
            raise TableError(
                f"spec keys 'action_low' < 'action_high' required, got {self.action_low}, "
                f"{self.action_high}"
            )
        if self.discrete and (self.action_low, self.action_high) != (0.0, 1.0):
            raise TableError(
                "spec keys 'action_low'/'action_high' must be 0 and 1 for discrete actions (they "
                f"reach models one-hot; action_dim counts the choices), got {self.action_low}, "
                f"{self.action_high}"
            )

    @property
    def obs_size(self) -> int:
        """Entries of one flattened observation."""
        return math.prod(self.obs_shape)

    def to_json_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {key: getattr(self, key) for key in _SPEC_FIELDS}
        data["obs_shape"] = list(self.obs_shape)
        data["format"] = FORMAT_VERSION
        return data

    def to_json(self) -> str:
        """Sorted-key compact JSON, including ``"format": 1``."""
        return json.dumps(self.to_json_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes, where: str) -> TableSpec:
        """Parse a spec; ``where`` (a file, a metadata key) starts every error message."""
        try:
            data = json.loads(text)
        except (ValueError, UnicodeDecodeError) as exc:
            raise TableError(f"{where}: the spec is not JSON ({exc})") from exc
        if not isinstance(data, dict):
            raise TableError(f"{where}: the spec must be a JSON object, got {data!r}")
        expected = {*_SPEC_FIELDS, "format"}
        missing, unknown = sorted(expected - set(data)), sorted(set(data) - expected)
        if missing:
            raise TableError(f"{where}: spec key {missing[0]!r} is missing (keys: {missing})")
        if unknown:
            raise TableError(
                f"{where}: spec key {unknown[0]!r} is unknown (allowed: {sorted(expected)})"
            )
        if data["format"] != FORMAT_VERSION or isinstance(data["format"], bool):
            raise TableError(
                f"{where}: spec key 'format' must be {FORMAT_VERSION}, got {data['format']!r}"
            )
        if not isinstance(data["obs_shape"], list):
            raise TableError(
                f"{where}: spec key 'obs_shape' must be a list of positive ints, got "
                f"{data['obs_shape']!r}"
            )
        try:
            return cls(**{key: data[key] for key in _SPEC_FIELDS})
        except TableError as exc:
            raise TableError(f"{where}: {exc}") from exc

    def dataset_spec(self) -> DatasetSpec:
        from worldflux.data.dataset import DatasetSpec

        return DatasetSpec(
            obs_shape=self.obs_shape,
            action_dim=self.action_dim,
            discrete=self.discrete,
            action_low=self.action_low,
            action_high=self.action_high,
        )

    @classmethod
    def from_dataset(cls, data: TrajectoryDataset, source: str, licence: str) -> TableSpec:
        spec = data.spec
        return cls(
            name=data.name,
            obs_shape=spec.obs_shape,
            discrete=spec.discrete,
            action_dim=spec.action_dim,
            action_low=spec.action_low,
            action_high=spec.action_high,
            source=source,
            licence=licence,
        )


def table_schema(spec: TableSpec | DatasetSpec, *, with_spec: bool = True) -> pa.Schema:
    """The canonical Arrow schema (with the spec in its metadata when ``spec`` is a TableSpec
    and ``with_spec``)."""
    action = pa.int64() if spec.discrete else pa.list_(pa.float32(), spec.action_dim)
    fields = [
        pa.field("episode", pa.int64()),
        pa.field("step", pa.int64()),
        pa.field("observation", pa.list_(pa.float32(), math.prod(spec.obs_shape))),
        pa.field("action", action),
        pa.field("reward", pa.float32()),
        pa.field("terminated", pa.bool_()),
        pa.field("truncated", pa.bool_()),
    ]
    metadata = {SPEC_KEY: spec.to_json()} if with_spec and isinstance(spec, TableSpec) else None
    return pa.schema(fields, metadata=metadata)


# ----------------------------------------------------------------------------------- write
def export_table(
    data: TrajectoryDataset,
    path: Path,
    *,
    source: str,
    licence: str,
    row_group_rows: int = 65_536,
) -> TableSpec:
    """Write ``data`` as a Parquet trajectory table, ``row_group_rows`` rows per row group.

    Deterministic (same data and pyarrow version, same bytes) and atomic (written to a
    temporary file beside ``path``, then renamed). Returns the spec stored in the file.
    """
    if not _is_int(row_group_rows) or row_group_rows < 1:
        raise ValueError(f"row_group_rows must be an int >= 1, got {row_group_rows!r}")
    spec = TableSpec.from_dataset(data, source=source, licence=licence)
    schema = table_schema(spec)
    rows = len(data)
    with TableWriter(Path(path), schema) as writer:
        for start in range(0, rows, row_group_rows):
            stop = min(start + row_group_rows, rows)
            writer.write(dataset_batch(data, schema, start, stop))
    return spec


class TableWriter:
    """``with TableWriter(path, schema) as writer: writer.write(batch)``: each batch
    becomes one row group, written with the fixed options to a temporary file that replaces
    ``path`` only when the block ends without an error."""

    def __init__(self, path: Path, schema: pa.Schema) -> None:
        self.path = Path(path)
        self.schema = schema
        fd, tmp = tempfile.mkstemp(
            dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp"
        )
        os.close(fd)
        self._tmp = Path(tmp)
        try:
            self._writer = pq.ParquetWriter(str(self._tmp), schema, **_WRITER_OPTIONS)
        except BaseException:
            self._tmp.unlink(missing_ok=True)
            raise

    def write(self, batch: pa.RecordBatch) -> None:
        table = pa.Table.from_batches([batch], schema=self.schema)
        self._writer.write_table(table, row_group_size=max(1, batch.num_rows))

    def __enter__(self) -> TableWriter:
        return self

    def __exit__(self, kind: object, exc: object, tb: object) -> None:
        try:
            self._writer.close()
            if kind is None:
                with open(self._tmp, "rb") as handle:
                    os.fsync(handle.fileno())
                os.replace(self._tmp, self.path)
        finally:
            self._tmp.unlink(missing_ok=True)


def dataset_batch(
    data: TrajectoryDataset, schema: pa.Schema, start: int, stop: int
) -> pa.RecordBatch:
    """Rows [start, stop) of a data set as a record batch of the canonical schema
    (observations as models see them: frames stored as bytes become floats in [0, 1])."""
    rows, spec = stop - start, data.spec
    columns = data.columns()
    obs = np.ascontiguousarray(data.observations(slice(start, stop)), dtype=np.float32)
    arrays: dict[str, pa.Array] = {
        "episode": pa.array(columns["episode"][start:stop], pa.int64()),
        "step": pa.array(columns["step"][start:stop], pa.int64()),
        "observation": pa.FixedSizeListArray.from_arrays(
            pa.array(obs.reshape(-1), pa.float32()), type=schema.field("observation").type
        ),
        "reward": pa.array(columns["reward"][start:stop], pa.float32()),
        "terminated": pa.array(columns["terminated"][start:stop], pa.bool_()),
        "truncated": pa.array(columns["truncated"][start:stop], pa.bool_()),
    }
    action = columns["action"][start:stop]
    if spec.discrete:
        arrays["action"] = pa.array(action, pa.int64())
    else:
        flat = np.ascontiguousarray(action, dtype=np.float32).reshape(rows * spec.action_dim)
        arrays["action"] = pa.FixedSizeListArray.from_arrays(
            pa.array(flat, pa.float32()), type=schema.field("action").type
        )
    return pa.RecordBatch.from_arrays([arrays[name] for name in schema.names], schema=schema)


# ------------------------------------------------------------------------------------ read
def open_parquet(path: Path) -> pq.ParquetFile:
    """Open a Parquet file, or raise TableError naming the file."""
    try:
        # pre_buffer caches every column chunk it reads until the file is closed: streaming a
        # large file with it on holds the whole file's bytes in memory.
        return pq.ParquetFile(str(path), pre_buffer=False)
    except OSError as exc:
        # pyarrow raises its ArrowInvalid (an OSError subclass too) for a non-Parquet file.
        if isinstance(exc, (FileNotFoundError, IsADirectoryError, PermissionError)):
            raise TableError(f"cannot read trajectory table {path}: {exc}") from exc
        raise TableError(_not_parquet(path, exc)) from exc
    except pa.ArrowException as exc:
        raise TableError(_not_parquet(path, exc)) from exc


def _not_parquet(path: Path, exc: BaseException) -> str:
    return (
        f"{path} is not a readable Parquet file ({exc}); trajectory tables are Parquet files "
        "(write them with quality.table.export_table or pyarrow.parquet)"
    )


def read_table_spec(path: Path, spec_file: Path | None = None) -> TableSpec:
    """The table's spec: from its ``worldflux.spec`` metadata, or from ``spec_file`` (JSON with
    the same keys) for a third-party file without one. If both exist they must agree."""
    with open_parquet(path) as parquet:
        metadata = parquet.metadata.metadata or {}
    raw = metadata.get(SPEC_KEY.encode())
    embedded = (
        None if raw is None else TableSpec.from_json(raw, where=f"{path} metadata {SPEC_KEY!r}")
    )
    if spec_file is None:
        if embedded is None:
            raise TableError(
                f"{path} has no {SPEC_KEY!r} metadata: pass a JSON spec file beside it with the "
                f"keys {sorted({*_SPEC_FIELDS, 'format'})}"
            )
        return embedded
    try:
        text = Path(spec_file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TableError(f"cannot read spec file {spec_file}: {exc}") from exc
    given = TableSpec.from_json(text, where=str(spec_file))
    if embedded is not None and embedded != given:
        raise TableError(
            f"spec file {spec_file} disagrees with the {SPEC_KEY!r} metadata of {path}: "
            f"{given.to_json()} vs {embedded.to_json()}; fix or drop the spec file"
        )
    return given


def stream_rows(
    schema: pa.Schema, columns: list[str] | None = None, max_rows: int = 1 << 20
) -> int:
    """Rows per batch when streaming ``columns`` of a table: about 64 MiB of decoded data,
    at most ``max_rows``."""
    names = schema.names if columns is None else columns
    row_bytes = sum(_value_bytes(schema.field(name).type) for name in names)
    return int(max(1, min(max_rows, _STREAM_BYTES // max(1, row_bytes))))


def _value_bytes(kind: pa.DataType) -> int:
    """Rough decoded bytes of one value of ``kind`` (lists: their fixed size, or 16)."""
    if pa.types.is_fixed_size_list(kind):
        return int(kind.list_size) * _value_bytes(kind.value_type)
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        return 16 * _value_bytes(kind.value_type)
    try:
        return max(1, int(kind.bit_width) // 8)
    except ValueError:  # variable width (strings, ...)
        return 32


def iter_row_groups(path: Path, rows: int | None = None) -> Iterator[pd.DataFrame]:
    """The table in chunks: the file's row groups (``rows=None``) or ``rows``-row batches
    (the last one shorter). Each DataFrame's index is the global row number.

    Columns are converted by pyarrow's ``to_pandas``: list columns (``observation``,
    continuous ``action``) become object columns holding one numpy array per row; an integer
    column with nulls becomes float64 with NaN (pandas' rule).
    """
    if rows is not None and (not _is_int(rows) or rows < 1):
        raise ValueError(f"rows must be an int >= 1 or None, got {rows!r}")
    with open_parquet(path) as parquet:
        tables: Iterator[pa.Table]
        if rows is None:
            tables = (parquet.read_row_group(i) for i in range(parquet.num_row_groups))
        else:
            tables = (pa.Table.from_batches([b]) for b in parquet.iter_batches(batch_size=rows))
        start = 0
        for table in tables:
            frame = table.to_pandas()
            frame.index = pd.RangeIndex(start, start + table.num_rows)
            start += table.num_rows
            yield frame


# ---------------------------------------------------------------------------------- digest
def table_digest(path: Path, *, spec: TableSpec | None = None) -> str:
    """The table's identity, computed streaming (column by column, batch by batch).

    When the file holds exactly the seven columns, each of its canonical type and without
    nulls, and a spec is known (``spec`` or the file's metadata), this equals
    ``TrajectoryDataset.digest`` of the data set the table holds (sorted column names, a
    ``name:dtype:shape`` header line each, then little-endian bytes; bools as numpy bools).
    Otherwise (a wrong dtype, a missing or extra column, a null, no spec, not Parquet at all)
    it is ``"raw-"`` + sha256 of the file's bytes. Raises TableError only if the file cannot
    be read at all.
    """
    path = Path(path)
    try:
        parquet = open_parquet(path)
    except TableError:
        return _raw_digest(path)
    with parquet:
        digest = _canonical_digest(parquet, path, spec)
    return digest if digest is not None else _raw_digest(path)


def _canonical_digest(parquet: pq.ParquetFile, path: Path, spec: TableSpec | None) -> str | None:
    if spec is None:
        raw = (parquet.metadata.metadata or {}).get(SPEC_KEY.encode())
        if raw is None:
            return None
        try:
            spec = TableSpec.from_json(raw, where=str(path))
        except TableError:
            return None
    schema = parquet.schema_arrow
    canonical = table_schema(spec, with_spec=False)
    if sorted(schema.names) != sorted(TABLE_COLUMNS):
        return None
    for name in TABLE_COLUMNS:
        if not _same_type(schema.field(name).type, canonical.field(name).type):
            return None
    rows = parquet.metadata.num_rows
    shapes: dict[str, tuple[int, ...]] = {
        "observation": (rows, *spec.obs_shape),
        "action": (rows,) if spec.discrete else (rows, spec.action_dim),
    }
    hasher = hashlib.sha256()
    for name in sorted(TABLE_COLUMNS):
        kind = canonical.field(name).type
        dtype = _numpy_dtype(kind).newbyteorder("<")
        shape = shapes.get(name, (rows,))
        hasher.update(f"{name}:{dtype.str}:{list(shape)}\n".encode())
        batch_rows = stream_rows(schema, [name])
        for batch in parquet.iter_batches(batch_size=batch_rows, columns=[name]):
            values = _plain_values(batch.column(0))
            if values is None:  # a null: no numpy data set holds this table
                return None
            hasher.update(np.ascontiguousarray(values, dtype=dtype).tobytes())
    return hasher.hexdigest()


def _same_type(actual: pa.DataType, expected: pa.DataType) -> bool:
    """Equal types; for fixed-size lists the child field's name does not matter."""
    if pa.types.is_fixed_size_list(expected):
        return (
            pa.types.is_fixed_size_list(actual)
            and actual.list_size == expected.list_size
            and actual.value_type == expected.value_type
        )
    return bool(actual == expected)


def _numpy_dtype(kind: pa.DataType) -> np.dtype[Any]:
    if pa.types.is_fixed_size_list(kind):
        kind = kind.value_type
    return np.dtype(kind.to_pandas_dtype())


def _plain_values(array: pa.Array) -> Array | None:
    """The values of a column (fixed-size lists flattened) as numpy, or None with nulls."""
    if array.null_count:
        return None
    if pa.types.is_fixed_size_list(array.type):
        array = array.flatten()
        if array.null_count:
            return None
    return np.asarray(array.to_numpy(zero_copy_only=False))


def _raw_digest(path: Path) -> str:
    hasher = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                hasher.update(block)
    except OSError as exc:
        raise TableError(f"cannot read trajectory table {path}: {exc}") from exc
    return "raw-" + hasher.hexdigest()


# ------------------------------------------------------------------------------------ load
def load_table(path: Path, spec: TableSpec, name: str | None = None) -> TrajectoryDataset:
    """Build the data set a table holds (named ``name``, default ``spec.name``).

    Meant for a table that passed ``validate_table``: columns of a wider kind (float64
    observations, int32 steps) are cast to the canonical dtypes. Anything the data set does
    not accept raises TableError naming the file.
    """
    path = Path(path)
    columns: dict[str, Array] = {}
    with open_parquet(path) as parquet:
        present = set(parquet.schema_arrow.names)
        for column in TABLE_COLUMNS:
            if column not in present:
                raise TableError(
                    f"{path}: column {column!r} is missing; run validate_table for a full report"
                )
            data = parquet.read(columns=[column]).column(0)
            try:
                columns[column] = _load_column(column, data, spec)
            except (TableError, pa.ArrowException, ValueError, TypeError) as exc:
                raise TableError(
                    f"{path}: column {column!r} cannot be loaded ({exc}); run validate_table "
                    "for a row-by-row report"
                ) from exc
    from worldflux.data.dataset import TrajectoryDataset

    try:
        return TrajectoryDataset(name=name or spec.name, spec=spec.dataset_spec(), **columns)
    except ValueError as exc:  # DatasetError
        raise TableError(
            f"{path}: not a valid data set ({exc}); run validate_table for a row-by-row report"
        ) from exc


def _load_column(column: str, data: pa.ChunkedArray, spec: TableSpec) -> Array:
    if data.null_count:
        raise TableError(f"{data.null_count} null row(s)")
    rows = len(data)
    if column == "observation" or (column == "action" and not spec.discrete):
        size = spec.obs_size if column == "observation" else spec.action_dim
        tail = spec.obs_shape if column == "observation" else (spec.action_dim,)
        if not _is_float_list(data.type):
            raise TableError(f"type {data.type} is not a list of floats")
        values = pc.list_flatten(data)
        if values.null_count:
            raise TableError("null entries")
        flat = np.asarray(values.to_numpy(), dtype=np.float32)
        if flat.shape[0] != rows * size:
            raise TableError(f"{flat.shape[0]} entries for {rows} rows of {size}")
        loaded = flat.reshape(rows, *tail)
        if column == "observation" and len(tail) == 3:
            from worldflux.data.dataset import frames_to_bytes

            # Frames of 255 levels are kept as bytes: the same floats for models, a quarter
            # of the memory (the data set's digest hashes them as those floats).
            as_bytes = frames_to_bytes(loaded)
            return loaded if as_bytes is None else as_bytes
        return loaded
    target = {
        "episode": pa.int64(),
        "step": pa.int64(),
        "action": pa.int64(),
        "reward": pa.float32(),
        "terminated": pa.bool_(),
        "truncated": pa.bool_(),
    }[column]
    if pa.types.is_boolean(target) != pa.types.is_boolean(data.type):
        raise TableError(f"type {data.type}, expected {target}")
    # safe=True: a non-integral float refuses to become an integer.
    cast = pc.cast(data, target, safe=not pa.types.is_floating(target))
    return np.asarray(cast.to_numpy())


def _is_float_list(kind: pa.DataType) -> bool:
    listy = pa.types.is_list(kind) or pa.types.is_large_list(kind)
    return bool(
        (listy or pa.types.is_fixed_size_list(kind)) and pa.types.is_floating(kind.value_type)
    )


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)
