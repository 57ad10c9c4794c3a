"""Extra PostgreSQL clusters on free ports, for the sharded layout (tests/integration/test_sharding.py).

`ShardCluster` is one throw-away cluster (initdb as the postgres user, trust authentication
on 127.0.0.1, started with pg_ctl); `shard_clusters()` makes several, and stops and removes
them afterwards. Which PostgreSQL: the newest under /usr/lib/postgresql, or PARTAGE_PG_BIN.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import psycopg

from partage.config import Settings
from partage.registry import sharding
from partage.registry.store import Registry
from partage.services import Services
from tests.support import free_port, postgres_database


def pg_bin() -> Path | None:
    configured = os.environ.get("PARTAGE_PG_BIN")
    if configured:
        return Path(configured)
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    return versions[-1].parent if versions else None


def _as_postgres(args: list[str]) -> list[str]:
    """Run as the postgres user when we are root (initdb refuses root)."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *args]
    return args


class ShardCluster:
    """One PostgreSQL cluster in a temporary directory, on a free port."""

    def __init__(self, bin_dir: Path, root: Path) -> None:
        self.bin_dir = bin_dir
        self.data = root / "data"
        self.port = free_port()
        self.log = root / "postgres.log"

    def init(self) -> ShardCluster:
        self._run([str(self.bin_dir / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust",
                   "-E", "UTF8", "--no-sync"])
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write(f"port = {self.port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = ''\n"
                       "fsync = off\nshared_buffers = 32MB\nmax_connections = 60\n")
        return self.start()

    def start(self) -> ShardCluster:
        self._run([str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60",
                   "start"])
        return self

    def stop(self, mode: str = "fast") -> None:
        self._run([str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"], check=False)

    def _run(self, args: list[str], check: bool = True) -> None:
        done = subprocess.run(_as_postgres(args), capture_output=True, text=True, timeout=120)
        if check and done.returncode != 0:
            raise RuntimeError(f"{' '.join(args)}: {done.returncode}\n{done.stdout}\n{done.stderr}")

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def database(self, prefix: str = "partage_shard") -> str:
        """A new database on this cluster; its SQLAlchemy URL."""
        name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{name}"


@contextmanager
def shard_clusters(count: int = 2) -> Iterator[list[ShardCluster]]:
    """`count` running clusters; raises RuntimeError when PostgreSQL's binaries are absent."""
    bin_dir = pg_bin()
    if bin_dir is None or not (bin_dir / "initdb").exists():
        raise RuntimeError("no PostgreSQL binaries (initdb) under /usr/lib/postgresql; set PARTAGE_PG_BIN")
    root = Path(tempfile.mkdtemp(prefix="partage-shards-"))
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        os.chown(root, user.pw_uid, user.pw_gid)
    clusters: list[ShardCluster] = []
    try:
        for k in range(count):
            home = root / f"shard{k}"
            home.mkdir()
            if os.geteuid() == 0:
                os.chown(home, pwd.getpwnam("postgres").pw_uid, pwd.getpwnam("postgres").pw_gid)
            clusters.append(ShardCluster(bin_dir, home).init())
        yield clusters
    finally:
        for cluster in clusters:
            cluster.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def sharded_database(clusters: list[ShardCluster]) -> Iterator[str]:
    """A coordinator database (on the main PostgreSQL) at migration head whose per-patient
    tables are sharded over a new database on each cluster; yields the coordinator's URL."""
    with postgres_database("partage_sharded") as url:
        registry = Registry(url)
        try:
            registry.migrate()
            sharding.shard(registry, [cluster.database() for cluster in clusters])
        finally:
            registry.dispose()
        yield url


def sharded_services(stack: ExitStack, root: Path, clusters: list[ShardCluster], prefix: str,
                     env: dict[str, str]) -> tuple[str, Services, list[sharding.Shard]]:
    """A coordinator database named after `prefix`, this process's services on it with the blob
    store `env` names (set in this process's environment, for boto3, until `stack` closes) and
    its shards, one database on each cluster: the coordinator's URL, the services, the shards."""
    url = stack.enter_context(postgres_database(prefix))
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    stack.callback(_restore_environment, saved)
    services = Services.open(Settings(data_dir=root / "admin", database_url=url, blob_url=env["PARTAGE_BLOB_URL"],
                                      s3_endpoint_url=env["PARTAGE_S3_ENDPOINT_URL"]))   # migrates to head
    stack.callback(services.close)
    return url, services, sharding.shard(services.registry, [c.database() for c in clusters])


def _restore_environment(saved: dict[str, str | None]) -> None:
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
