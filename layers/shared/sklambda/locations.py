"""Where a store lives: `s3://bucket/prefix` (S3, through sklambda.aws) or a local folder.

Its own module so that the backends do not import each other: sklambda.aws imports sklambda.objects (the interface
and Blob), and only this module knows both.
"""

from __future__ import annotations

from sklambda.objects import LocalObjects, ObjectStore


def open_object_store(uri: str) -> ObjectStore:
    """`s3://bucket/prefix` → S3 (imports boto3 only then); anything else is a local folder."""
    if uri.startswith("s3://"):
        from sklambda.aws import S3Objects  # boto3 stays out of processes that never touch S3

        return S3Objects.from_uri(uri)
    if "://" in uri:
        raise ValueError(f"unsupported store location {uri!r}: use a local folder or s3://bucket/prefix")
    return LocalObjects(uri)
