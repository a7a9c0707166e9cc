"""Vendor ``sftp``: files on an sFTP server, the partition carried in the file name (seed 002).

Config (plus the file settings of ``files``: ``file_format``, ``compression``, ``csv_separator``, batching,
consent, properties)::

    {"host": "sftp.example.com", "port": 22, "username": "export", "password": "env:SFTP_PASSWORD",
     "host_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA...", "path": "myFolder", "export_name": "myExport",
     "partition": "hour", "file_format": "csv", "compression": "gzip"}

``password`` or ``private_key`` (PEM/OpenSSH text, inline or ``env:``/``file:``; ``private_key_passphrase``)
authenticate. The server's host key is verified by default: ``host_key`` (one or more ``<type> <base64>``
lines, as in ``known_hosts`` without the host) or ``known_hosts`` (a file). An unknown or changed key
refuses the connection with a clear message; ``"verify_host_key": false`` turns the check off (never do
that outside a test network).

Folders cannot be assumed on an sFTP server, so everything goes into ``path`` and the partition is in the
name: ``<export>_<YYYY-MM-DD>[_<HH>[_<mm-range>]]_data_<id>_<n>.<ext>[.gz]`` with ``partition`` ``date``,
``hour`` (default), ``half_hour`` or ``quarter_hour`` (ranges ``00-30``/``30-60``, ``00-15`` ...), ``<id>``
derived from the file's events and ``<n>`` the file's number in its partition. The delivery report of each
generation is ``<export>_<generation>_delivery.report``, written after its files.

Publishing (reliability rule 2): each file is uploaded under a hidden temporary name (``.<name>.tmp-<random>``)
and renamed to its final name with the standard SFTP rename, which fails when the name exists: nothing is
ever overwritten, and a name that exists already holds this very batch (the id is derived from its events),
so a retry reports it ``already_present``. The uploaded size is checked before the rename. A dropped
connection is retried with a new one (``max_attempts``); temporary files of failed attempts are removed.
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from transforms import commit
from transforms.routes import Route
from transforms.secrets import SecretField
from transforms.sinks.base import Destination
from transforms.sinks.files import FileOutputConfig, WriteEventsToFiles, relocate_path
from transforms.storage.sftp import SFTPStorage

PARTITIONS = {"date": "{date}", "hour": "{date}_{HH}", "half_hour": "{date}_{HH}_{min30}",
              "quarter_hour": "{date}_{HH}_{min15}"}


class SFTPConfig(FileOutputConfig):
    host: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9.-]{0,252}$|^\[?[0-9a-fA-F:]+\]?$")
    """The server."""
    port: int = Field(22, ge=1, le=65535)
    """The server."""
    username: str = Field(min_length=1, max_length=256)
    """The server."""
    password: SecretField | None = None
    """Inline or `env:`/`file:`; OpenSSH or PEM keys (Ed25519, ECDSA, RSA)"""
    private_key: SecretField | None = None
    """Inline or `env:`/`file:`; OpenSSH or PEM keys (Ed25519, ECDSA, RSA)"""
    private_key_passphrase: SecretField | None = None
    """Inline or `env:`/`file:`; OpenSSH or PEM keys (Ed25519, ECDSA, RSA)"""
    host_key: str | None = Field(None, min_length=16, max_length=65536)
    """The server's public key line(s) (`ssh-ed25519 AAAA...`), or a known_hosts file. An unknown or changed key
    refuses the connection before authenticating (exit 2 at start). `"verify_host_key": false` turns the check
    off: test networks only."""
    known_hosts: str | None = None
    """The server's public key line(s) (`ssh-ed25519 AAAA...`), or a known_hosts file. An unknown or changed key
    refuses the connection before authenticating (exit 2 at start). `"verify_host_key": false` turns the check
    off: test networks only."""
    verify_host_key: bool = True
    """`false` turns the host-key check off: test networks only."""
    path: str = Field(".", min_length=1, max_length=1024, pattern=r"^[^\x00-\x1f]+$")
    """The folder files go to (must exist)"""
    export_name: str = Field("events", pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
    """First part of every name."""
    partition: Literal["date", "hour", "half_hour", "quarter_hour"] = "hour"
    """`date`, `hour`, `half_hour` or `quarter_hour`: `myExport_2021-04-08_10_data_<id>_<n>.csv.gz`,
    `myExport_2021-04-08_10_15-30_data_...`."""
    max_attempts: int = Field(5, ge=1, le=20)
    """Per file: a dropped connection is retried on a new one, this many times in all."""
    timeout_seconds: float = Field(30, gt=0, le=600)
    """How long connecting and each operation may take."""

    def destination(self) -> str:
        return f"sftp:{self.host}:{self.port}/{self.path.strip('/')}/{self.export_name}_"

    @model_validator(mode="before")
    @classmethod
    def _layout(cls, data):
        # The layout is fixed by ``partition``: decided before the file settings' own defaults apply.
        if isinstance(data, dict):
            if "partition_by" in data:
                raise ValueError("sftp: set partition (date, hour, half_hour, quarter_hour); folders are not used")
            data = dict(data)
            data.setdefault("file_name", "data_{id}_{n}")
            if data.get("partition", "hour") in PARTITIONS:
                data["partition_by"] = PARTITIONS[data.get("partition", "hour")]
        return data

    @model_validator(mode="after")
    def _sftp(self):
        if (self.password is None) == (self.private_key is None):
            raise ValueError("give exactly one of password or private_key")
        if self.verify_host_key and not (self.host_key or self.known_hosts):
            raise ValueError("give host_key or known_hosts (the server's key is verified), or set verify_host_key "
                             "false on a test network")
        if "{id}" not in self.file_name:
            raise ValueError("sftp: file_name must contain {id} (names cannot be checked back on an sFTP server)")
        if self.completes_partitions():
            # Partitions are parts of file names here, with no folder to hold a marker or bookkeeping.
            raise ValueError("sftp: completion_marker and the statsig profile need a files, s3 or gcs destination")
        return self

    def open_storage(self, route: Route) -> SFTPStorage:
        return SFTPStorage(self)

    def preflight(self) -> list[str]:
        """Secrets resolve; the server answers with the configured host key; ``path`` is a folder."""
        for name in ("password", "private_key", "private_key_passphrase"):
            secret = getattr(self, name)
            if secret is not None and (problem := secret.check()):
                return [f"{name}: {problem}"]
        storage = SFTPStorage(self)
        try:
            storage.check_folder()
        except commit.PublishError as exc:
            return [str(exc)]
        finally:
            storage.close()
        return []


DESTINATION = Destination(SFTPConfig, WriteEventsToFiles, relocate=relocate_path)
