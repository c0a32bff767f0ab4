"""Load a table (CSV or Parquet; a file, a folder or an S3 prefix) and clean it: the load stage's reading and
the validate stage's cleaning."""

from __future__ import annotations

import hashlib
import io
import logging
from dataclasses import dataclass, field
from pathlib import Path

import fastparquet
import pandas as pd

from sklambda.errors import DataError, NotFound
from sklambda.objects import open_object_store

logger = logging.getLogger(__name__)

CSV_SUFFIXES = (".csv", ".csv.gz")
PARQUET_SUFFIXES = (".parquet", ".pq")
DATA_SUFFIXES = CSV_SUFFIXES + PARQUET_SUFFIXES


@dataclass(frozen=True)
class LoadedTable:
    frame: pd.DataFrame
    uri: str
    files: list[str]
    # sha256 over the raw bytes of every file (sorted by name): the data fingerprint in the manifest.
    sha256: str


def read_data_files(uri: str) -> list[tuple[str, bytes]]:
    """(name, bytes) of every CSV/Parquet file at `uri`: one file, or all files under a folder or S3 prefix."""
    if uri.endswith(DATA_SUFFIXES):
        parent, _, name = uri.replace("\\", "/").rpartition("/")
        store = open_object_store(parent or ".")
        try:
            return [(uri, store.get(name).data)]
        except NotFound:
            raise DataError(f"training data {uri} does not exist") from None
    if not uri.startswith("s3://") and not Path(uri).is_dir():
        raise DataError(f"training data {uri} does not exist or is not a CSV/Parquet file or a folder")
    store = open_object_store(uri)
    try:
        keys = [key for key in store.list("") if key.endswith(DATA_SUFFIXES)]
    except NotFound as error:
        raise DataError(f"training data {uri}: {error}") from None
    if not keys:
        raise DataError(f"no CSV or Parquet files under {uri}")
    return [(store.uri(key), store.get(key).data) for key in keys]


PARQUET_MAGIC = b"PAR1"


def check_parquet_framing(name: str, data: bytes) -> None:
    """Refuse bytes that are not framed as Parquet (PAR1 ... footer, footer length, PAR1) before a reader trusts
    the footer length they claim: fastparquet allocates whatever it says, and a corrupt file then exhausts the
    memory (or crashes the process) instead of failing with a report."""
    size = len(data)
    if size < 12 or data[:4] != PARQUET_MAGIC or data[-4:] != PARQUET_MAGIC:
        raise DataError(f"cannot parse {name}: not a Parquet file (no PAR1 magic at both ends; truncated?)")
    footer = int.from_bytes(data[-8:-4], "little")
    if footer > size - 12:
        raise DataError(f"cannot parse {name}: corrupt Parquet footer (claims {footer} bytes in a {size}-byte file)")


def parse_table(name: str, data: bytes) -> pd.DataFrame:
    if name.endswith(PARQUET_SUFFIXES):
        check_parquet_framing(name, data)
    try:
        if name.endswith(PARQUET_SUFFIXES):
            # fastparquet directly: ~15 MiB in the retrain layer where pyarrow is ~170 MiB, and pandas 3.1
            # deprecates its fastparquet engine wrapper.
            frame: pd.DataFrame = fastparquet.ParquetFile(io.BytesIO(data)).to_pandas()
            return frame
        return pd.read_csv(io.BytesIO(data), compression="gzip" if name.endswith(".gz") else None)
    except Exception as error:  # pandas raises many unrelated types for a malformed file
        raise DataError(f"cannot parse {name}: {type(error).__name__}: {error}") from None


def load_table(uri: str) -> LoadedTable:
    files = read_data_files(uri)
    frames = [parse_table(name, data) for name, data in files]
    columns = list(frames[0].columns)
    for (name, _), frame in zip(files[1:], frames[1:], strict=True):
        if list(frame.columns) != columns:
            raise DataError(f"{name} has columns {list(frame.columns)}, but {files[0][0]} has {columns}")
    digest = hashlib.sha256()
    for name, data in sorted(files):
        digest.update(name.rsplit("/", 1)[-1].encode() + b"\0" + hashlib.sha256(data).digest())
    frame = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
    logger.info("loaded %d rows x %d columns from %d file(s) at %s", len(frame), len(columns), len(files), uri)
    return LoadedTable(frame=frame, uri=uri, files=[name for name, _ in files], sha256=digest.hexdigest())


@dataclass
class CleanReport:
    rows_in: int
    rows_out: int
    dropped: dict[str, int] = field(default_factory=dict)

    def describe(self) -> str:
        parts = [f"{count} rows {reason}" for reason, count in self.dropped.items() if count]
        return f"{self.rows_out} of {self.rows_in} rows kept" + (f" (dropped {', '.join(parts)})" if parts else "")


def clean(frame: pd.DataFrame, target: str) -> tuple[pd.DataFrame, CleanReport]:
    """Rows without a target are dropped; text is stripped and empty text becomes missing."""
    if target not in frame.columns:
        raise DataError(
            f"target column {target!r} is not in the data; columns are: {', '.join(map(str, frame.columns))}"
        )
    cleaned = frame.copy()
    for name in cleaned.columns:
        column = cleaned[name]
        if column.dtype == object or pd.api.types.is_string_dtype(column):
            # Once per distinct value, not per row: a million rows of a text column hold a handful of values.
            distinct = column.dropna().unique().tolist()
            stripped = column.map({v: (v.strip() or None) if isinstance(v, str) else v for v in distinct})
            cleaned[name] = stripped.astype(object).where(stripped.notna(), None)
    missing_target = cleaned[target].isna()
    cleaned = cleaned.loc[~missing_target].reset_index(drop=True)
    report = CleanReport(
        rows_in=len(frame), rows_out=len(cleaned), dropped={"without a target": int(missing_target.sum())}
    )
    logger.info("cleaned: %s", report.describe())
    return cleaned, report
