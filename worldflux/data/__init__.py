"""Trajectory data: the flat row layout, the bundled data sets and their collection."""

from worldflux.data.bundled import BUNDLED_DIR, list_bundled, load_bundled
from worldflux.data.dataset import DatasetSpec, TrajectoryDataset

__all__ = ["BUNDLED_DIR", "DatasetSpec", "TrajectoryDataset", "list_bundled", "load_bundled"]
