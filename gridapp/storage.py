"""Where photo bytes live, behind one small interface: put a stream, open a byte range, exists, delete.

Two backends: the local filesystem (the default) and S3-compatible object storage (PHOTO_STORAGE = "s3")
for deployments that outgrow one machine. Both stream in bounded chunks: no whole object is ever held
in memory. A put is atomic (a reader sees the old object or the new one, never half of one).
"""
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from flask import current_app

CHUNK = 64 * 1024


class FileStorage:
    """Objects as files under a root directory; keys are relative paths."""

    def __init__(self, root: str):
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root.resolve() not in path.parents:
            raise ValueError(f"storage key escapes the root: {key!r}")
        return path

    def put(self, key: str, chunks: Iterable[bytes]) -> int:
        """Store the chunks under key (replacing it atomically); return the bytes written."""
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        written = 0
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".put-")
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in chunks:
                    out.write(chunk)
                    written += len(chunk)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return written

    def open(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """Yield the bytes of [start, end) (to the end when end is None) in chunks."""
        with open(self._path(key), "rb") as src:
            src.seek(start)
            left = None if end is None else end - start
            while left is None or left > 0:
                chunk = src.read(CHUNK if left is None else min(CHUNK, left))
                if not chunk:
                    return
                if left is not None:
                    left -= len(chunk)
                yield chunk

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)


class _ChunkReader:
    """A read()-able file object over an iterator of chunks (what boto3's upload_fileobj wants)."""

    def __init__(self, chunks: Iterable[bytes]):
        self._chunks, self._buffer, self.count = iter(chunks), bytearray(), 0

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self._buffer) < size:
            chunk = next(self._chunks, None)
            if chunk is None:
                break
            self._buffer += chunk
        cut = len(self._buffer) if size < 0 else min(size, len(self._buffer))
        data = bytes(self._buffer[:cut])
        del self._buffer[:cut]
        self.count += len(data)
        return data


class S3Storage:
    """Objects in one bucket of an S3-compatible store (AWS S3, MinIO, Ceph RGW, moto's server)."""

    # One part in flight at a time: memory stays at one part (8 MiB) whatever the object's size.
    PART_BYTES = 8 * 1024 * 1024

    def __init__(self, bucket: str, endpoint_url: str | None = None, region: str | None = None,
                 access_key: str | None = None, secret_key: str | None = None):
        import boto3
        from boto3.s3.transfer import TransferConfig

        self.bucket = bucket
        self.client = boto3.client("s3", endpoint_url=endpoint_url, region_name=region or "us-east-1",
                                   aws_access_key_id=access_key, aws_secret_access_key=secret_key)
        self.transfer = TransferConfig(multipart_threshold=self.PART_BYTES, multipart_chunksize=self.PART_BYTES,
                                       max_concurrency=1, use_threads=False)

    def put(self, key: str, chunks: Iterable[bytes]) -> int:
        reader = _ChunkReader(chunks)
        self.client.upload_fileobj(reader, self.bucket, key, Config=self.transfer)
        return reader.count

    def open(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        byte_range = f"bytes={start}-" + ("" if end is None else str(end - 1))
        if end is not None and end <= start:
            return iter(())
        body = self.client.get_object(Bucket=self.bucket, Key=key, Range=byte_range)["Body"]
        return body.iter_chunks(CHUNK)

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=key)
            return True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=key)


def make_storage(config) -> FileStorage | S3Storage:
    """Build the backend named by PHOTO_STORAGE from the app's configuration."""
    if config["PHOTO_STORAGE"] == "s3":
        return S3Storage(config["PHOTO_S3_BUCKET"], endpoint_url=config.get("PHOTO_S3_ENDPOINT_URL"),
                         region=config.get("PHOTO_S3_REGION"), access_key=config.get("PHOTO_S3_ACCESS_KEY"),
                         secret_key=config.get("PHOTO_S3_SECRET_KEY"))
    if config["PHOTO_STORAGE"] != "file":
        raise RuntimeError(f"gridapp: PHOTO_STORAGE must be 'file' or 's3', not {config['PHOTO_STORAGE']!r}")
    return FileStorage(config["PHOTO_STORAGE_DIR"])


def init_app(app) -> None:
    app.extensions["photo_storage"] = make_storage(app.config)


def storage() -> FileStorage | S3Storage:
    """The current app's photo storage."""
    return current_app.extensions["photo_storage"]
