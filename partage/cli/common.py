"""What the command modules share: settings from flags, storage flags, and the one error type.

A command that meets a problem it expects (a missing file, a bad setting, a peer that does
not answer) raises `CliError`; `partage.cli.main` prints it as one line and exits with its
status. Nothing reaches the user as a traceback.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path

from sqlalchemy.engine import make_url

from ..config import Settings, SettingsError
from ..registry.store import url_problem

Subparsers = argparse._SubParsersAction  # the `sub` each command module adds its parser to


class CliError(Exception):
    """An expected failure of a command: printed as one line, exit status `status`."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


def number(low: float, high: float, *, integer: bool = False, low_open: bool = False) -> Callable[[str], float]:
    """An argparse type for a number flag: a finite number in [low, high] (in (low, high] when
    `low_open`), an integer when `integer`; anything else is a usage error naming the flag and
    the range, never a failure deep in the command (a NaN timeout, an infinite age, a negative
    validity)."""
    kind = "an integer" if integer else "a number"
    above = f"above {_plain(low)}" if low_open else f"at least {_plain(low)}"

    def parse(value: str) -> float:
        try:
            parsed = int(value) if integer else float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{value!r} is not {kind}") from None
        if not math.isfinite(parsed) or parsed > high or parsed < low or (low_open and parsed == low):
            raise argparse.ArgumentTypeError(f"{value!r} is not {kind} {above} and at most {_plain(high)}")
        return parsed

    parse.__name__ = "integer" if integer else "number"   # argparse names the type in its messages
    return parse


def _plain(value: float) -> str:
    return str(int(value)) if value == int(value) else str(value)


def storage_arguments(p: argparse.ArgumentParser) -> None:
    """--data and --database: what the commands that open the registry need."""
    p.add_argument("--data", dest="data_dir", metavar="DIR",
                   help="data directory (default PARTAGE_DATA_DIR or ./partage-data)")
    p.add_argument("--database", dest="database_url", metavar="URL",
                   help="SQLAlchemy URL (default PARTAGE_DATABASE_URL, or SQLite in the data directory)")


def settings_from(args: argparse.Namespace) -> Settings:
    """Defaults < PARTAGE_* environment < the flags this command has (SettingsError names a bad one)."""
    names = {f for f in Settings.__dataclass_fields__ if f != "extra"}
    return Settings.from_env(**{k: v for k, v in vars(args).items() if k in names})


def existing_data_dir(settings: Settings) -> None:
    """For commands that read a store: refuse a data directory or a SQLite file that holds none
    (instead of making one), and a URL the registry cannot live at."""
    if settings.database_url:
        problem = url_problem(settings.database_url)
        if problem:
            raise CliError(f"--database (PARTAGE_DATABASE_URL): {problem}", 2)
        url = make_url(settings.database_url)
        if url.get_backend_name() == "sqlite" and not (url.database and Path(url.database).is_file()):
            raise CliError(f"--database (PARTAGE_DATABASE_URL): no SQLite database at {url.database or '(none)'}", 2)
        return
    database = Path(settings.database.removeprefix("sqlite:///"))
    if not database.is_file():
        raise CliError(f"no Partage data in {settings.data_dir} ({database.name} not found); "
                       "give --data DIR or --database URL", 2)


def host_port(value: str, flag: str) -> tuple[str, int]:
    """HOST:PORT (host optional) -> (host, port); CliError naming `flag` otherwise."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise CliError(f"{flag} must be HOST:PORT (e.g. 127.0.0.1:2575), not {value!r}", 2)
    return host or "127.0.0.1", int(port)


__all__ = ["CliError", "Subparsers", "SettingsError", "existing_data_dir", "host_port", "number", "settings_from",
           "storage_arguments"]
