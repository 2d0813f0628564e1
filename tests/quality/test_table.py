"""The Parquet trajectory table: the spec, deterministic export, reading back in chunks, the
streaming digest that equals the data set's, and the export -> load round trip."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from quality.table import (
    SPEC_KEY,
    TABLE_COLUMNS,
    TableError,
    TableSpec,
    export_table,
    iter_row_groups,
    load_table,
    read_table_spec,
    table_digest,
)
from worldflux.data import load_bundled
from worldflux.data.dataset import TrajectoryDataset, frames_to_bytes

BUNDLED = ["pendulum", "cartpole", "cartpole_pixels"]


@pytest.fixture(scope="module")
def datasets() -> dict[str, TrajectoryDataset]:
    return {name: load_bundled(name) for name in BUNDLED}


@pytest.fixture(scope="module")
def exported(
    datasets: dict[str, TrajectoryDataset], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("tables")
    paths = {}
    for name, data in datasets.items():
        paths[name] = folder / f"{name}.parquet"
        export_table(data, paths[name], source="bundled", licence="MIT", row_group_rows=4096)
    return paths


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _spec_dict(**changes: object) -> dict[str, object]:
    spec = {
        "format": 1,
        "name": "pendulum",
        "obs_shape": [3],
        "discrete": False,
        "action_dim": 1,
        "action_low": -2.0,
        "action_high": 2.0,
        "source": "bundled",
        "licence": "MIT",
    }
    spec.update(changes)
    return spec


# ------------------------------------------------------------------------------------ spec
def test_spec_json_is_sorted_and_round_trips(datasets: dict[str, TrajectoryDataset]) -> None:
    spec = TableSpec.from_dataset(datasets["pendulum"], source="bundled", licence="MIT")
    assert spec.to_json() == (
        '{"action_dim":1,"action_high":2.0,"action_low":-2.0,"discrete":false,"format":1,'
        '"licence":"MIT","name":"pendulum","obs_shape":[3],"source":"bundled"}'
    )
    assert TableSpec.from_json(spec.to_json(), where="x") == spec
    assert spec.dataset_spec() == datasets["pendulum"].spec
    pixels = TableSpec.from_dataset(datasets["cartpole_pixels"], source="s", licence="l")
    assert pixels.obs_shape == (1, 32, 32)
    assert pixels.obs_size == 1024


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"obs_shape": [3, 0]}, "obs_shape"),
        ({"obs_shape": "3"}, "obs_shape"),
        ({"discrete": 1}, "discrete"),
        ({"action_dim": 0}, "action_dim"),
        ({"action_low": "low"}, "action_low"),
        ({"action_low": 3.0}, "action_low"),
        ({"licence": ""}, "licence"),
        ({"format": 2}, "format"),
        ({"colour": "red"}, "colour"),
        ({"discrete": True, "action_dim": 2}, "action_low"),
    ],
)
def test_malformed_spec_names_the_key(changes: dict[str, object], key: str) -> None:
    with pytest.raises(TableError, match=rf"^spec\.json: .*'{key}'"):
        TableSpec.from_json(json.dumps(_spec_dict(**changes)), where="spec.json")


def test_spec_missing_key_and_not_json() -> None:
    spec = _spec_dict()
    del spec["licence"]
    with pytest.raises(TableError, match="spec key 'licence' is missing"):
        TableSpec.from_json(json.dumps(spec), where="f")
    with pytest.raises(TableError, match="not JSON"):
        TableSpec.from_json("{", where="f")


# ----------------------------------------------------------------------------------- write
def test_export_is_deterministic_with_the_documented_schema(
    datasets: dict[str, TrajectoryDataset], exported: dict[str, Path], tmp_path: Path
) -> None:
    data = datasets["pendulum"]
    again = tmp_path / "again.parquet"
    spec = export_table(data, again, source="bundled", licence="MIT", row_group_rows=4096)
    assert again.read_bytes() == exported["pendulum"].read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again.parquet"]  # no temp file left
    parquet = pq.ParquetFile(again)
    assert parquet.num_row_groups == math.ceil(len(data) / 4096) == 3
    assert parquet.metadata.metadata[SPEC_KEY.encode()].decode() == spec.to_json()
    schema = parquet.schema_arrow
    assert schema.names == list(TABLE_COLUMNS)
    # (Parquet names a list's child field "element"; Arrow type equality ignores the name.)
    assert [schema.field(name).type for name in TABLE_COLUMNS] == [
        pa.int64(),
        pa.int64(),
        pa.list_(pa.float32(), 3),
        pa.list_(pa.float32(), 1),
        pa.float32(),
        pa.bool_(),
        pa.bool_(),
    ]
    cartpole = pq.ParquetFile(exported["cartpole"]).schema_arrow
    assert cartpole.field("action").type == pa.int64()
    pixels = pq.ParquetFile(exported["cartpole_pixels"]).schema_arrow
    assert pixels.field("observation").type == pa.list_(pa.float32(), 1024)


def test_export_rejects_a_bad_row_group_size(
    datasets: dict[str, TrajectoryDataset], tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match="row_group_rows"):
        export_table(
            datasets["pendulum"], tmp_path / "t.parquet", source="s", licence="l", row_group_rows=0
        )


# ------------------------------------------------------------------------------------ read
def test_read_spec_from_metadata_or_a_spec_file(
    datasets: dict[str, TrajectoryDataset], exported: dict[str, Path], tmp_path: Path
) -> None:
    spec = read_table_spec(exported["cartpole"])
    assert spec == TableSpec.from_dataset(datasets["cartpole"], source="bundled", licence="MIT")
    # A third-party file: same columns, no metadata; the spec comes from a JSON file beside it.
    plain = tmp_path / "third_party.parquet"
    pq.write_table(pq.read_table(exported["cartpole"]).replace_schema_metadata(None), plain)
    with pytest.raises(TableError, match=r"has no 'worldflux\.spec' metadata: pass a JSON spec"):
        read_table_spec(plain)
    spec_file = tmp_path / "third_party.spec.json"
    spec_file.write_text(spec.to_json())
    assert read_table_spec(plain, spec_file) == spec
    # Both present: they must agree.
    other = tmp_path / "other.json"
    other.write_text(json.dumps({**json.loads(spec.to_json()), "licence": "CC-BY-4.0"}))
    with pytest.raises(TableError, match="disagrees"):
        read_table_spec(exported["cartpole"], other)
    assert read_table_spec(exported["cartpole"], spec_file) == spec


def test_read_spec_errors_name_the_file(exported: dict[str, Path], tmp_path: Path) -> None:
    text = tmp_path / "table.parquet"
    text.write_text("episode,step\n0,0\n")
    with pytest.raises(TableError, match=r"table\.parquet is not a readable Parquet file"):
        read_table_spec(text)
    with pytest.raises(TableError, match="cannot read trajectory table"):
        read_table_spec(tmp_path / "missing.parquet")
    # Malformed metadata names the file, the key and the bad spec key.
    table = pq.read_table(exported["pendulum"])
    bad = json.dumps(_spec_dict(obs_shape=[-3]))
    broken = tmp_path / "broken.parquet"
    pq.write_table(table.replace_schema_metadata({SPEC_KEY: bad}), broken)
    with pytest.raises(
        TableError, match=r"broken\.parquet metadata 'worldflux\.spec': .*'obs_shape'"
    ):
        read_table_spec(broken)


def test_iter_row_groups(datasets: dict[str, TrajectoryDataset], exported: dict[str, Path]) -> None:
    data = datasets["pendulum"]
    groups = list(iter_row_groups(exported["pendulum"]))
    assert [len(g) for g in groups] == [4096, 4096, len(data) - 8192]
    assert [g.index[0] for g in groups] == [0, 4096, 8192]
    batches = list(iter_row_groups(exported["pendulum"], rows=3000))
    assert [len(b) for b in batches] == [3000, 3000, 3000, len(data) - 9000]
    assert batches[-1].index[-1] == len(data) - 1
    row = 4 * 201 + 37
    frame = batches[0]
    assert list(frame.columns) == list(TABLE_COLUMNS)
    observation = frame.loc[row, "observation"]
    assert isinstance(observation, np.ndarray)
    assert observation.dtype == np.float32
    np.testing.assert_array_equal(observation, data.columns()["observation"][row])
    assert (frame.loc[row, "episode"], frame.loc[row, "step"]) == (4, 37)
    with pytest.raises(ValueError, match="rows"):
        next(iter_row_groups(exported["pendulum"], rows=0))


# ------------------------------------------------------------------------- digest and load
@pytest.mark.parametrize("name", BUNDLED)
def test_round_trip_keeps_the_digest(
    name: str, datasets: dict[str, TrajectoryDataset], exported: dict[str, Path]
) -> None:
    data, path = datasets[name], exported[name]
    assert table_digest(path) == data.digest
    spec = read_table_spec(path)
    loaded = load_table(path, spec)
    assert loaded.digest == data.digest
    assert loaded.frames_as_bytes == data.frames_as_bytes == (name == "cartpole_pixels")
    assert loaded.name == name
    assert loaded.spec == data.spec
    assert load_table(path, spec, name="renamed").name == "renamed"


def test_digest_falls_back_to_the_file_bytes(exported: dict[str, Path], tmp_path: Path) -> None:
    table = pq.read_table(exported["pendulum"])
    # A wrong dtype: step stored as float64.
    floats = tmp_path / "float_step.parquet"
    step = table.schema.get_field_index("step")
    pq.write_table(table.set_column(step, "step", table["step"].cast(pa.float64())), floats)
    assert table_digest(floats) == "raw-" + _sha256(floats)
    # A missing column.
    missing = tmp_path / "no_reward.parquet"
    pq.write_table(table.drop_columns(["reward"]), missing)
    assert table_digest(missing) == "raw-" + _sha256(missing)
    # Not Parquet at all.
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    assert table_digest(text) == "raw-" + _sha256(text)
    # Canonical columns but no spec metadata: raw, unless the spec is given.
    plain = tmp_path / "plain.parquet"
    pq.write_table(table.replace_schema_metadata(None), plain)
    assert table_digest(plain) == "raw-" + _sha256(plain)
    spec = read_table_spec(exported["pendulum"])
    assert table_digest(plain, spec=spec) == table_digest(exported["pendulum"])


def test_third_party_types_load_to_the_same_data_set(
    datasets: dict[str, TrajectoryDataset], exported: dict[str, Path], tmp_path: Path
) -> None:
    """Variable-size lists of float64, int32 keys, no metadata: the suite's kinds, not the
    canonical types; load_table casts them back (and the digest is the file's bytes)."""
    data = datasets["pendulum"]
    table = pq.read_table(exported["pendulum"]).replace_schema_metadata(None)
    wide = pa.table(
        {
            "episode": table["episode"].cast(pa.int32()),
            "step": table["step"].cast(pa.int32()),
            "observation": table["observation"].cast(pa.list_(pa.float64())),
            "action": table["action"].cast(pa.list_(pa.float64())),
            "reward": table["reward"].cast(pa.float64()),
            "terminated": table["terminated"],
            "truncated": table["truncated"],
            "comment": pa.array(["x"] * len(table)),  # extra columns are ignored
        }
    )
    path = tmp_path / "wide.parquet"
    pq.write_table(wide, path)
    spec = TableSpec.from_dataset(data, source="someone", licence="CC0")
    assert load_table(path, spec).digest == data.digest
    assert table_digest(path, spec=spec) == "raw-" + _sha256(path)


def test_load_refuses_what_the_data_set_refuses(exported: dict[str, Path], tmp_path: Path) -> None:
    table = pq.read_table(exported["pendulum"])
    spec = read_table_spec(exported["pendulum"])
    step = table["step"].to_numpy().astype(np.float64)
    step[30] = 30.5
    path = tmp_path / "half_step.parquet"
    index = table.schema.get_field_index("step")
    pq.write_table(table.set_column(index, "step", pa.array(step)), path)
    with pytest.raises(TableError, match=r"half_step\.parquet: column 'step' cannot be loaded"):
        load_table(path, spec)
    terminated = table["terminated"].to_numpy().copy()
    terminated[5] = True
    path = tmp_path / "two_ends.parquet"
    index = table.schema.get_field_index("terminated")
    pq.write_table(table.set_column(index, "terminated", pa.array(terminated)), path)
    with pytest.raises(
        TableError, match=r"two_ends\.parquet: not a valid data set .*validate_table"
    ):
        load_table(path, spec)
    path = tmp_path / "no_reward.parquet"
    pq.write_table(table.drop_columns(["reward"]), path)
    with pytest.raises(TableError, match="column 'reward' is missing"):
        load_table(path, spec)


def test_frames_off_the_255_levels_load_as_floats(
    datasets: dict[str, TrajectoryDataset], tmp_path: Path
) -> None:
    """A table's frames are kept as bytes only when that is lossless to the bit: one value off
    the 255 levels (or a -0.0) keeps them float32, and the digest is the table's either way."""
    frames = datasets["cartpole_pixels"]
    columns = frames.columns()
    observation = frames.observations()
    observation[3, 0, 5, 5] = 0.5  # 127.5 / 255: between two levels
    columns["observation"] = observation
    off = TrajectoryDataset(name="off_levels", spec=frames.spec, **columns)
    path = tmp_path / "off.parquet"
    export_table(off, path, source="test", licence="MIT")
    loaded = load_table(path, read_table_spec(path))
    assert not loaded.frames_as_bytes
    assert loaded.digest == off.digest == table_digest(path)
    assert loaded.observations()[3, 0, 5, 5] == np.float32(0.5)
    negative_zero = np.zeros((2, 1, 4, 4), dtype=np.float32)
    assert frames_to_bytes(negative_zero) is not None
    negative_zero[1, 0, 2, 2] = -0.0
    assert frames_to_bytes(negative_zero) is None
    assert frames_to_bytes(np.full((1, 1, 4, 4), 1.5, dtype=np.float32)) is None
