"""S3 access for the dataset: reading an ``s3://`` mirror and uploading a prepared root.

Credentials come only from the environment (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
optional ``AWS_SESSION_TOKEN``); without them requests go unsigned (public buckets). Shared config
files and instance metadata are never consulted, and no credential is ever logged. The endpoint is
the ``endpoint_url`` argument, else ``AWS_ENDPOINT_URL``, else AWS itself.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from srseg.errors import SrsegError
from srseg.fileio import sha256_file

logger = logging.getLogger(__name__)

SHA256_METADATA_KEY = "sha256"


class S3Error(SrsegError, RuntimeError):
    """An S3 object could not be read or written."""


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/some/key`` -> ("bucket", "some/key")."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc:
        raise ValueError(f"{url!r} is not an s3://bucket/key URL")
    return parts.netloc, parts.path.lstrip("/")


def resolve_endpoint(endpoint_url: str | None) -> str | None:
    return endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or None


def make_client(endpoint_url: str | None = None, timeout_s: float = 60.0) -> Any:
    """A boto3 S3 client with credentials from the environment only, one attempt per call
    (our own retry policy wraps it), and explicit timeouts."""
    import boto3
    from botocore import UNSIGNED
    from botocore.config import Config

    endpoint = resolve_endpoint(endpoint_url)
    key_id = os.environ.get("AWS_ACCESS_KEY_ID")
    secret = os.environ.get("AWS_SECRET_ACCESS_KEY")
    config_kwargs: dict[str, Any] = {
        "connect_timeout": timeout_s,
        "read_timeout": timeout_s,
        "retries": {"total_max_attempts": 1, "mode": "standard"},
    }
    if not (key_id and secret):
        logger.info("no AWS credentials in the environment; using unsigned S3 requests")
        config_kwargs["signature_version"] = UNSIGNED
    session = boto3.session.Session(
        aws_access_key_id=key_id or None,
        aws_secret_access_key=secret or None,
        aws_session_token=os.environ.get("AWS_SESSION_TOKEN") or None,
        region_name=os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION") or "us-east-1",
    )
    logger.debug("S3 client for endpoint %s", endpoint or "(AWS default)")
    return session.client("s3", endpoint_url=endpoint, config=Config(**config_kwargs))


def is_not_found(exc: BaseException) -> bool:
    """True for a botocore error that means "no such bucket/key"."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return False
    code = str(response.get("Error", {}).get("Code", ""))
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return code in ("404", "NoSuchKey", "NoSuchBucket", "NotFound") or status == 404


def is_client_error(exc: BaseException) -> bool:
    """True for a 4xx answer from S3 (retrying will not help), except throttling."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return False
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
    return 400 <= int(status) < 500 and int(status) != 429


def open_range(client: Any, url: str, start: int, end: int | None = None) -> tuple[Any, int, int]:
    """Open bytes ``start..end`` (inclusive; ``end=None`` = to the end) of an object.

    Returns (botocore StreamingBody, offset actually served, total object size)."""
    bucket, key = parse_s3_url(url)
    kwargs: dict[str, Any] = {"Bucket": bucket, "Key": key}
    if start or end is not None:
        kwargs["Range"] = f"bytes={start}-{'' if end is None else end}"
    answer = client.get_object(**kwargs)
    content_range = answer.get("ContentRange")
    length = int(answer["ContentLength"])
    if content_range:  # "bytes a-b/total"
        span, _, total = content_range.removeprefix("bytes ").partition("/")
        offset = int(span.split("-")[0])
        size = int(total) if total != "*" else offset + length
    else:
        offset, size = 0, length
    return answer["Body"], offset, size


def upload_tree(root: str | Path, bucket: str, prefix: str, endpoint_url: str | None = None) -> list[str]:
    """Upload every file under ``root`` to ``s3://bucket/prefix/<relative path>``.

    Objects already there with the same size and recorded sha256 are skipped, so a repeated
    upload of an unchanged root transfers nothing. Returns the keys written."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: not a directory; nothing to upload")
    client = make_client(endpoint_url)
    prefix = prefix.strip("/")
    written: list[str] = []
    files = sorted(p for p in root.rglob("*") if p.is_file())
    for path in files:
        rel = path.relative_to(root).as_posix()
        key = f"{prefix}/{rel}" if prefix else rel
        digest = sha256_file(path)
        try:
            answer = client.head_object(Bucket=bucket, Key=key)
            same = (
                int(answer["ContentLength"]) == path.stat().st_size
                and answer.get("Metadata", {}).get(SHA256_METADATA_KEY) == digest
            )
        except Exception as exc:  # botocore ClientError; 404 means "upload it"
            if not is_not_found(exc):
                raise S3Error(f"s3://{bucket}/{key}: cannot inspect object ({exc})") from exc
            same = False
        if same:
            logger.debug("s3://%s/%s up to date", bucket, key)
            continue
        try:
            client.upload_file(str(path), bucket, key, ExtraArgs={"Metadata": {SHA256_METADATA_KEY: digest}})
        except Exception as exc:
            raise S3Error(f"{path} -> s3://{bucket}/{key}: upload failed ({exc})") from exc
        written.append(key)
    logger.info("uploaded %d of %d files from %s to s3://%s/%s", len(written), len(files), root, bucket, prefix)
    return written
