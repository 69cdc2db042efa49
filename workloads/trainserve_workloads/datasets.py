"""Load a TrainingJob's dataset into arrays, split it, and check it before any worker starts."""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from trainserve.api.trainingjob import DatasetSpec, LossName

from .errors import WorkloadError
from .storage import Location, locate

CLASSIFICATION_LOSSES = ("sparse_categorical_crossentropy", "categorical_crossentropy")
DEFAULT_LABEL_COLUMN = "label"


@dataclass
class Dataset:
    """Features and labels, already split; labels are class indices for classification."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    feature_names: list[str]
    #: Original label values, index = class id (classification); empty otherwise.
    classes: list[Any]

    @property
    def n_features(self) -> int:
        return int(self.x_train.shape[1])

    def fingerprint(self) -> str:
        """SHA-256 of the data as trained on (both splits, features and labels), for a model's lineage."""
        digest = hashlib.sha256()
        for array in (self.x_train, self.y_train, self.x_val, self.y_val):
            digest.update(f"{array.dtype.str}{array.shape}".encode())
            digest.update(np.ascontiguousarray(array).tobytes())
        return f"sha256:{digest.hexdigest()}"


def dataset_uri(spec: DatasetSpec) -> str:
    """Where the data comes from, as a model's lineage names it: its location, or `builtin:<name>`."""
    return spec.uri if spec.uri is not None else f"builtin:{spec.builtin}"


def _location(spec: DatasetSpec) -> Location:
    assert spec.uri is not None
    try:
        return locate(spec.uri)
    except ValueError as err:
        raise WorkloadError("spec.dataset.uri", str(err), "use a local path, file://... or s3://bucket/key") from None


def _require_file(spec: DatasetSpec) -> Location:
    location = _location(spec)
    try:
        found = location.exists() and not location.is_dir()
    except OSError as err:
        raise WorkloadError(
            "spec.dataset.uri", f"cannot reach {spec.uri}: {err}", "check the URI and the storage credentials"
        ) from None
    if not found:
        raise WorkloadError(
            "spec.dataset.uri", f"no file at {spec.uri}", "point `uri` at an existing file (a file, not a folder)"
        )
    return location


def _read_table(spec: DatasetSpec, location: Location) -> pa.Table:
    data = location.read_bytes()
    try:
        if spec.format == "csv":
            return pacsv.read_csv(io.BytesIO(data))
        return pq.read_table(io.BytesIO(data))
    except (pa.ArrowInvalid, OSError) as err:
        raise WorkloadError(
            "spec.dataset.format", f"{spec.uri} is not readable as {spec.format}: {err}", "fix the file or the `format`"
        ) from None


def _table_columns(spec: DatasetSpec, names: list[str]) -> tuple[list[str], str]:
    label = spec.label_column or DEFAULT_LABEL_COLUMN
    if label not in names:
        raise WorkloadError(
            "spec.dataset.labelColumn",
            f"column {label!r} is not in {spec.uri} (columns: {', '.join(names)})",
            "set `labelColumn` to one of the columns",
        )
    features = spec.feature_columns or [n for n in names if n != label]
    missing = [c for c in features if c not in names]
    if missing:
        raise WorkloadError(
            "spec.dataset.featureColumns",
            f"column(s) {', '.join(map(repr, missing))} not in {spec.uri} (columns: {', '.join(names)})",
            "list only existing columns in `featureColumns`",
        )
    if label in features:
        raise WorkloadError("spec.dataset.featureColumns", f"the label {label!r} is also a feature", "remove it")
    return features, label


def check_dataset(spec: DatasetSpec) -> None:
    """Fail fast, before any worker starts: the file exists, is readable, and has the named columns."""
    if spec.builtin is not None:
        return
    location = _require_file(spec)
    if spec.format == "parquet":
        try:
            with location.fs.open_input_file(location.path) as handle:
                names = pq.ParquetFile(handle).schema_arrow.names
        except (pa.ArrowInvalid, OSError) as err:
            raise WorkloadError(
                "spec.dataset.format", f"{spec.uri} is not a parquet file: {err}", "fix the file or the `format`"
            ) from None
        _table_columns(spec, names)
    elif spec.format == "csv":
        _table_columns(spec, _read_table(spec, location).column_names)
    else:
        _load_npz(spec, location)


def dataset_size(spec: DatasetSpec, loss: LossName) -> tuple[int, int]:
    """Features per row and classes (0 unless classification), checking the data as :func:`load_dataset` would;
    a parquet file is read no further than its schema and label column (the workers read it whole)."""
    if spec.builtin is not None or spec.format != "parquet":
        data = load_dataset(spec, loss)
        return data.n_features, len(data.classes)
    check_dataset(spec)
    location = _location(spec)
    with location.fs.open_input_file(location.path) as handle:
        parquet = pq.ParquetFile(handle)
        features, label = _table_columns(spec, parquet.schema_arrow.names)
        schema = parquet.schema_arrow
        odd = [c for c in features if not pa.types.is_integer(schema.field(c).type)]
        odd = [c for c in odd if not pa.types.is_floating(schema.field(c).type)]
        if odd:  # text, decimals, ...: converted as the workers will
            _feature_matrix(parquet.read(columns=odd), odd)
        if parquet.metadata.num_rows < 2:
            raise WorkloadError("spec.dataset.uri", f"only {parquet.metadata.num_rows} row(s)", "provide more data")
        labels = parquet.read(columns=[label]).column(0) if loss in CLASSIFICATION_LOSSES else None
    return len(features), len(np.unique(labels.to_numpy(zero_copy_only=False))) if labels is not None else 0


def _load_npz(spec: DatasetSpec, location: Location) -> tuple[np.ndarray, np.ndarray]:
    try:
        archive = np.load(io.BytesIO(location.read_bytes()), allow_pickle=False)
    except (ValueError, OSError) as err:
        raise WorkloadError("spec.dataset.format", f"{spec.uri} is not an npz file: {err}", "fix the file") from None
    missing = [k for k in ("x", "y") if k not in archive.files]
    if missing:
        raise WorkloadError(
            "spec.dataset.uri",
            f"{spec.uri} lacks array(s) {', '.join(missing)} (has: {', '.join(archive.files)})",
            "save the features as `x` and the labels as `y` (np.savez(path, x=..., y=...))",
        )
    return archive["x"], archive["y"]


def _raw_arrays(spec: DatasetSpec) -> tuple[np.ndarray, np.ndarray, list[str]]:
    if spec.builtin == "digits":
        from sklearn.datasets import load_digits

        digits = load_digits()
        return digits.data, digits.target, [f"pixel_{i}" for i in range(digits.data.shape[1])]
    location = _require_file(spec)
    if spec.format == "npz":
        x, y = _load_npz(spec, location)
        x = x.reshape(len(x), -1)
        return x, y, [f"x_{i}" for i in range(x.shape[1])]
    table = _read_table(spec, location)
    features, label = _table_columns(spec, table.column_names)
    return _feature_matrix(table, features), table.column(label).to_numpy(zero_copy_only=False), features


def _feature_matrix(table: pa.Table, features: list[str]) -> np.ndarray:
    try:
        return np.column_stack([table.column(c).to_numpy(zero_copy_only=False).astype("float32") for c in features])
    except (ValueError, TypeError) as err:
        raise WorkloadError(
            "spec.dataset.featureColumns", f"a feature column is not numeric: {err}", "use numeric feature columns"
        ) from None


def load_dataset(spec: DatasetSpec, loss: LossName) -> Dataset:
    """The whole dataset as float32 features and encoded labels, shuffled with ``shuffleSeed`` and split."""
    x, y, names = _raw_arrays(spec)
    if len(x) != len(y):
        raise WorkloadError("spec.dataset.uri", f"{len(x)} feature rows but {len(y)} labels", "give one label per row")
    if len(x) < 2:
        raise WorkloadError("spec.dataset.uri", f"only {len(x)} row(s)", "provide more data")
    x = x.astype("float32")
    classes: list[Any] = []
    if loss in CLASSIFICATION_LOSSES:
        values, y = np.unique(y, return_inverse=True)
        classes = [v.item() if hasattr(v, "item") else v for v in values]
        y = y.astype("int64")
    else:
        y = y.astype("float32")
    order = np.random.default_rng(spec.shuffle_seed).permutation(len(x))
    x, y = x[order], y[order]
    n_val = round(len(x) * spec.validation_split)
    return Dataset(x[n_val:], y[n_val:], x[:n_val], y[:n_val], names, classes)
