"""Bounded ingest (issue 13): a 20 GB listing and a gzip bomb in the data prefix are refused before they are read
(or inflated), with a message that says what was found and what to do."""

from __future__ import annotations

import gzip
import io
import re
from pathlib import Path
from typing import Any

import boto3
import fastparquet
import pandas as pd
import pytest

from sklambda.errors import DataError
from sklambda.objects import LocalObjects
from tests.conftest import BUCKET, PENGUINS_CSV
from training import dataset
from training.dataset import ReadLimits, load_table

pytestmark = pytest.mark.unit

GB = 1000**3


def test_a_20_gb_listing_is_refused_before_any_object_is_read(s3_bucket: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a data prefix whose listing says 20 GB (moto stores the objects; the listing's sizes are faked)
    s3 = boto3.client("s3", region_name="us-east-1")
    for part in range(4):
        s3.put_object(Bucket=s3_bucket, Key=f"data/part-{part}.csv", Body=b"a,b\n1,2\n")
    from sklambda.aws import S3Objects

    listed = S3Objects.sizes
    monkeypatch.setattr(S3Objects, "sizes", lambda self, prefix: dict.fromkeys(listed(self, prefix), 5 * GB))
    reads: list[str] = []
    monkeypatch.setattr(S3Objects, "get", lambda self, key: reads.append(key))

    # When training data is loaded from it
    with pytest.raises(DataError, match=re.escape("4 file(s) hold 19,073.5 MiB, more than the 2,048.0 MiB")) as refused:
        load_table(f"s3://{BUCKET}/data/")

    # Then nothing was read, and the message says what to do
    assert reads == []
    assert "narrower prefix" in str(refused.value)


def test_a_listing_over_the_limit_is_refused_for_a_local_folder_and_a_single_file(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_bytes(b"x,y\n" + b"1,2\n" * 1000)
    (tmp_path / "b.csv").write_bytes(b"x,y\n" + b"1,2\n" * 1000)
    limits = ReadLimits(max_stored_bytes=6000, max_decompressed_bytes=10**9)
    with pytest.raises(DataError, match="2 file\\(s\\) hold"):
        load_table(str(tmp_path), limits)
    assert len(load_table(str(tmp_path / "a.csv"), limits).frame) == 1000
    with pytest.raises(DataError, match="1 file\\(s\\) hold"):
        load_table(str(tmp_path / "a.csv"), ReadLimits(max_stored_bytes=3000))


def test_a_gzip_bomb_is_refused_without_inflating_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given 256 MiB of zeros behind a header, gzipped to about 256 KiB, in the data folder
    bomb = io.BytesIO()
    with gzip.GzipFile(fileobj=bomb, mode="wb", compresslevel=1) as writer:
        writer.write(b"a,b\n")
        zeros = b"0" * (16 * 1024**2)
        for _ in range(16):
            writer.write(zeros)
    (tmp_path / "bomb.csv.gz").write_bytes(bomb.getvalue())
    assert len(bomb.getvalue()) < 2 * 1024**2
    inflated: list[int] = []
    original = dataset._DecompressedBudget.take

    def counting(self: Any, name: str, count: int) -> None:
        inflated.append(count)
        original(self, name, count)

    monkeypatch.setattr(dataset._DecompressedBudget, "take", counting)

    # When it is loaded with a 32 MiB decompression limit
    with pytest.raises(DataError, match=re.escape("decompresses to more than 32.0 MiB")):
        load_table(str(tmp_path), ReadLimits(max_stored_bytes=GB, max_decompressed_bytes=32 * 1024**2))

    # Then decompression stopped just past the limit (one chunk), far from the 256 MiB it would inflate to
    assert sum(inflated) <= 32 * 1024**2 + 16 * 1024**2


def test_a_parquet_file_whose_pages_inflate_past_the_limit_is_refused(tmp_path: Path) -> None:
    frame = pd.DataFrame({"a": ["x" * 1000] * 2000, "b": range(2000)})
    fastparquet.write(str(tmp_path / "t.parquet"), frame, compression="GZIP")
    assert (tmp_path / "t.parquet").stat().st_size < 100_000
    with pytest.raises(DataError, match="decompresses to more than"):
        load_table(str(tmp_path), ReadLimits(max_stored_bytes=GB, max_decompressed_bytes=1_000_000))
    assert len(load_table(str(tmp_path)).frame) == 2000


def test_valid_gzip_csv_still_loads_and_a_truncated_one_is_refused(tmp_path: Path) -> None:
    data = gzip.compress(PENGUINS_CSV.read_bytes()) + gzip.compress(b"")  # two members, the second empty
    (tmp_path / "penguins.csv.gz").write_bytes(data)
    plain = load_table(str(PENGUINS_CSV)).frame
    assert load_table(str(tmp_path / "penguins.csv.gz")).frame.equals(plain)
    (tmp_path / "penguins.csv.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="truncated"):
        load_table(str(tmp_path / "penguins.csv.gz"))


def test_both_stores_list_sizes_without_reading(tmp_path: Path, s3_bucket: str) -> None:
    local = LocalObjects(tmp_path)
    local.put("data/a.csv", b"12345")
    assert local.sizes("data/") == {"data/a.csv": 5}
    from sklambda.aws import S3Objects

    boto3.client("s3", region_name="us-east-1").put_object(Bucket=s3_bucket, Key="p/data/a.csv", Body=b"123")
    assert S3Objects(s3_bucket, "p").sizes("data/") == {"data/a.csv": 3}
