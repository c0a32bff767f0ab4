"""Load a table (CSV or Parquet; a file, a folder or an S3 prefix) and clean it: the load stage's reading and
the validate stage's cleaning.

Loading is bounded (ReadLimits): the listed sizes are summed before any file is read, and decompression stops at
a cap, so an oversized prefix or a gzip bomb is refused with a clear message rather than exhausting the memory."""

from __future__ import annotations

import hashlib
import io
import logging
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import fastparquet
import numpy as np
import pandas as pd

from sklambda.errors import DataError, NotFound
from sklambda.locations import open_object_store
from sklambda.objects import ObjectStore, SizedListing

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


GIB = 1024**3


@dataclass(frozen=True)
class ReadLimits:
    """How much training data one load may take in: the stored bytes (summed from the listing, before anything is
    read) and the bytes once decompressed (gzip, Parquet pages), counted while decompressing. A folder of huge
    files, or a small file that inflates to gigabytes (a gzip bomb), is refused with the numbers instead of
    exhausting the memory. `ReadLimits.for_memory_mb` fits the limits to a Lambda's memory."""

    max_stored_bytes: int = 2 * GIB
    max_decompressed_bytes: int = 4 * GIB

    @classmethod
    def for_memory_mb(cls, memory_mb: float) -> ReadLimits:
        # A parsed table takes several times its CSV size: the raw bytes may use at most a quarter of the memory.
        quarter = int(memory_mb * 1024**2 / 4)
        return cls(max_stored_bytes=quarter, max_decompressed_bytes=quarter)


DEFAULT_READ_LIMITS = ReadLimits()
_GUNZIP_CHUNK = 16 * 1024**2


def _size(count: int) -> str:
    return f"{count / 1024**2:,.1f} MiB"


def read_data_files(uri: str, limits: ReadLimits = DEFAULT_READ_LIMITS) -> list[tuple[str, bytes]]:
    """(name, bytes) of every CSV/Parquet file at `uri`: one file, or all files under a folder or S3 prefix.

    The sizes the listing reports are summed first: over `limits.max_stored_bytes`, nothing is read."""
    if uri.endswith(DATA_SUFFIXES):
        parent, _, name = uri.replace("\\", "/").rpartition("/")
        store = open_object_store(parent or ".")
        sizes = _listed_sizes(store, name, uri)
        if name not in sizes:
            raise DataError(f"training data {uri} does not exist")
        _check_stored(uri, {name: sizes[name]}, limits)
        try:
            return [(uri, _read_within(store, name, sizes[name], uri, limits))]
        except NotFound:
            raise DataError(f"training data {uri} does not exist") from None
    if not uri.startswith("s3://") and not Path(uri).is_dir():
        raise DataError(f"training data {uri} does not exist or is not a CSV/Parquet file or a folder")
    store = open_object_store(uri)
    listed = {key: size for key, size in _listed_sizes(store, "", uri).items() if key.endswith(DATA_SUFFIXES)}
    if not listed:
        raise DataError(f"no CSV or Parquet files under {uri}")
    _check_stored(uri, listed, limits)
    return [(store.uri(key), _read_within(store, key, size, uri, limits)) for key, size in sorted(listed.items())]


def _listed_sizes(store: ObjectStore, prefix: str, uri: str) -> dict[str, int]:
    if not isinstance(store, SizedListing):
        raise DataError(f"training data {uri}: this store cannot list object sizes")
    try:
        return store.sizes(prefix)
    except NotFound as error:
        raise DataError(f"training data {uri}: {error}") from None


def _check_stored(uri: str, sizes: dict[str, int], limits: ReadLimits) -> None:
    total = sum(sizes.values())
    if total > limits.max_stored_bytes:
        biggest = max(sizes, key=lambda key: sizes[key])
        raise DataError(
            f"refusing to read the training data at {uri}: {len(sizes)} file(s) hold {_size(total)}, more than the "
            f"{_size(limits.max_stored_bytes)} one run may read (the largest: {biggest}, {_size(sizes[biggest])}). "
            "Train on a narrower prefix or a sample, or train outside the Lambda with more memory"
        )


def _read_within(store: ObjectStore, key: str, listed: int, uri: str, limits: ReadLimits) -> bytes:
    data = store.get(key).data
    if len(data) > max(listed, limits.max_stored_bytes):
        # Replaced by a bigger object between the listing and the read.
        raise DataError(f"training data {uri}: {key} grew to {_size(len(data))} while being read; refusing it")
    return data


class _DecompressedBudget:
    """The decompressed bytes left for the rest of a load, shared by its files."""

    def __init__(self, limits: ReadLimits) -> None:
        self.limit = limits.max_decompressed_bytes
        self.used = 0

    def take(self, name: str, count: int) -> None:
        self.used += count
        if self.used > self.limit:
            raise DataError(
                f"refusing to read {name}: the training data decompresses to more than {_size(self.limit)} "
                "(a file that inflates far beyond its stored size, or too much data for one run)"
            )


def gunzip_within(name: str, data: bytes, budget: _DecompressedBudget) -> bytes:
    """Decompress gzip (every member) in bounded chunks, stopping as soon as the budget is exceeded."""
    parts: list[bytes] = []
    decompressor = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    pending = data
    while True:
        try:
            chunk = decompressor.decompress(pending, _GUNZIP_CHUNK)
        except zlib.error as error:
            raise DataError(f"cannot parse {name}: not valid gzip ({error})") from None
        budget.take(name, len(chunk))
        parts.append(chunk)
        pending = decompressor.unconsumed_tail
        if decompressor.eof:
            pending = decompressor.unused_data
            if not pending.strip(b"\0"):
                return b"".join(parts)
            decompressor = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)  # the next gzip member
        elif not chunk and not pending:
            raise DataError(f"cannot parse {name}: the gzip stream is truncated")


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


def parse_table(name: str, data: bytes, budget: _DecompressedBudget | None = None) -> pd.DataFrame:
    budget = budget or _DecompressedBudget(DEFAULT_READ_LIMITS)
    if name.endswith(PARQUET_SUFFIXES):
        check_parquet_framing(name, data)
    elif name.endswith(".gz"):
        data = gunzip_within(name, data, budget)
    else:
        budget.take(name, len(data))
    try:
        if name.endswith(PARQUET_SUFFIXES):
            # fastparquet directly: ~15 MiB in the retrain layer where pyarrow is ~170 MiB, and pandas 3.1
            # deprecates its fastparquet engine wrapper.
            parquet = fastparquet.ParquetFile(io.BytesIO(data))
            # The footer states each row group's uncompressed size: checked before any page is decompressed.
            budget.take(name, sum(group.total_byte_size or 0 for group in parquet.row_groups))
            frame: pd.DataFrame = parquet.to_pandas()
            return frame
        return pd.read_csv(io.BytesIO(data))
    except DataError:
        raise
    except Exception as error:  # pandas raises many unrelated types for a malformed file
        raise DataError(f"cannot parse {name}: {type(error).__name__}: {error}") from None


def load_table(uri: str, limits: ReadLimits = DEFAULT_READ_LIMITS) -> LoadedTable:
    files = read_data_files(uri, limits)
    budget = _DecompressedBudget(limits)
    frames = [parse_table(name, data, budget) for name, data in files]
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
    cleaned = frame.copy(deep=False)  # copy-on-write (pandas 3): the caller's table is never changed through it
    for name in cleaned.columns:
        column = cleaned[name]
        text = column.dtype == object or pd.api.types.is_string_dtype(column)
        if text and pd.api.types.infer_dtype(column, skipna=True) == "string":
            # Text only (the usual case): each distinct value stripped once, and the rows take theirs by code
            # (factorized as plain objects: pandas' own string dtype hashes them at more than twice the cost).
            values = column.to_numpy(dtype=object)
            codes, uniques = pd.factorize(values)  # missing values get code -1: the table's last entry
            table = np.array([*(value.strip() or None for value in uniques.tolist()), None], dtype=object)
            cleaned[name] = pd.Series(table[codes], index=column.index, name=name, dtype=object)
        elif text:
            # Once per distinct value, not per row: a million rows of a text column hold a handful of values.
            distinct = column.dropna().unique().tolist()
            stripped = column.map({v: (v.strip() or None) if isinstance(v, str) else v for v in distinct})
            cleaned[name] = stripped.astype(object).where(stripped.notna(), None)
    missing_target = cleaned[target].isna()
    # Every row kept (the usual case): the same table without selecting each row into a copy.
    cleaned = cleaned.loc[~missing_target] if missing_target.any() else cleaned
    cleaned = cleaned.reset_index(drop=True)
    report = CleanReport(
        rows_in=len(frame), rows_out=len(cleaned), dropped={"without a target": int(missing_target.sum())}
    )
    logger.info("cleaned: %s", report.describe())
    return cleaned, report
