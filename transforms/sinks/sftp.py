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

import base64
import io
import threading
import time
import uuid
from typing import Literal

from pydantic import Field, model_validator

from transforms import commit, ledger
from transforms.routes import Route
from transforms.secrets import SecretField, redact
from transforms.sinks.files import FileOutputConfig

PARTITIONS = {"date": "{date}", "hour": "{date}_{HH}", "half_hour": "{date}_{HH}_{min30}",
              "quarter_hour": "{date}_{HH}_{min15}"}


class HostKeyRefused(commit.PublishError):
    """The server's host key is not the configured one (unknown or changed)."""


class SFTPConfig(FileOutputConfig):
    host: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9.-]{0,252}$|^\[?[0-9a-fA-F:]+\]?$")
    port: int = Field(22, ge=1, le=65535)
    username: str = Field(min_length=1, max_length=256)
    password: SecretField | None = None
    private_key: SecretField | None = None
    private_key_passphrase: SecretField | None = None
    host_key: str | None = Field(None, min_length=16, max_length=65536)
    known_hosts: str | None = None
    verify_host_key: bool = True
    path: str = Field(".", min_length=1, max_length=1024, pattern=r"^[^\x00-\x1f]+$")
    export_name: str = Field("events", pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
    partition: Literal["date", "hour", "half_hour", "quarter_hour"] = "hour"
    max_attempts: int = Field(5, ge=1, le=20)
    timeout_seconds: float = Field(30, gt=0, le=600)

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


def flat_name(export: str, relative: str) -> str:
    """The sFTP file name for a writer's relative path (``<partition>/<file>`` or ``_reports/<report>``). Pure.

    >>> flat_name("myExport", "2021-04-08_10/data_ab12_1.csv.gz")
    'myExport_2021-04-08_10_data_ab12_1.csv.gz'
    >>> flat_name("myExport", "_reports/0123_delivery.report")
    'myExport_0123_delivery.report'
    >>> flat_name("myExport", "_ledger/4f2a/ab12.ids")  # bookkeeping: hidden, as the temporary uploads are
    '.myExport_ledger_4f2a_ab12.ids'
    """
    parts = relative.split("/")
    if len(parts) == 3 and parts[0] == ledger.LEDGER_DIR and all(parts) and "." not in parts[1]:
        return f".{export}_ledger_{parts[1]}_{parts[2]}"
    if len(parts) != 2 or not all(parts) or any(p in (".", "..") for p in parts):
        raise ValueError(f"unexpected relative path {relative!r}")
    if parts[0] == commit.REPORT_DIR:
        return f"{export}_{parts[1]}"
    return f"{export}_{parts[0]}_{parts[1]}"


def parse_host_keys(text: str):
    """``[(type, PKey)]`` from ``<type> <base64> [comment]`` lines (``known_hosts`` lines without the host)."""
    import paramiko

    keys = []
    for line in text.strip().splitlines():
        fields = line.split()
        if not fields or line.lstrip().startswith("#"):
            continue
        if len(fields) >= 3 and not fields[0].startswith(("ssh-", "ecdsa-", "sk-")):
            fields = fields[1:]  # a full known_hosts line: drop the host pattern
        try:
            keys.append((fields[0], paramiko.PKey.from_type_string(fields[0], base64.b64decode(fields[1]))))
        except Exception:  # noqa: BLE001 - one clear message for any malformed key
            raise ValueError(f"host_key: not a public key line ({fields[0]!r} ...)") from None
    if not keys:
        raise ValueError("host_key: no key found")
    return keys


class SFTPStorage:
    """Files in one folder of an sFTP server, published by temporary upload and rename-if-absent."""

    def __init__(self, config: SFTPConfig):
        self._c = config
        self._client = None
        self._sftp = None
        self._lock = threading.Lock()

    # -- connection -------------------------------------------------------------------------------
    def _connect(self):
        import paramiko

        c = self._c
        client = paramiko.SSHClient()
        if c.verify_host_key:
            if c.known_hosts:
                client.load_host_keys(c.known_hosts)
            if c.host_key:
                name = c.host if c.port == 22 else f"[{c.host}]:{c.port}"
                for kind, key in parse_host_keys(c.host_key):
                    client.get_host_keys().add(name, kind, key)
            client.set_missing_host_key_policy(paramiko.RejectPolicy())
        else:
            client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
        pkey = None
        if c.private_key is not None:
            passphrase = c.private_key_passphrase.get() if c.private_key_passphrase else None
            pkey = _load_private_key(c.private_key.get(), passphrase)
        where = f"{c.host}:{c.port}"
        try:
            client.connect(c.host, port=c.port, username=c.username,
                           password=c.password.get() if c.password is not None else None, pkey=pkey,
                           look_for_keys=False, allow_agent=False, timeout=c.timeout_seconds,
                           banner_timeout=c.timeout_seconds, auth_timeout=c.timeout_seconds)
        except paramiko.BadHostKeyException:
            client.close()
            raise HostKeyRefused(f"sftp {where}: the server's host key CHANGED (it is not the configured key); "
                                 f"refusing to connect") from None
        except paramiko.SSHException as exc:
            client.close()
            if "not found in known_hosts" in str(exc):
                raise HostKeyRefused(f"sftp {where}: the server's host key is UNKNOWN (not in host_key/known_hosts); "
                                     f"refusing to connect") from None
            raise commit.PublishError(redact(f"sftp {where}: {type(exc).__name__}: {exc}")) from None
        except OSError as exc:
            client.close()
            raise commit.PublishError(redact(f"sftp {where}: cannot connect ({exc})")) from None
        self._client = client
        self._sftp = client.open_sftp()
        self._sftp.get_channel().settimeout(c.timeout_seconds)
        return self._sftp

    def _session(self):
        return self._sftp if self._sftp is not None else self._connect()

    def close(self):
        for thing in (self._sftp, self._client):
            try:
                if thing is not None:
                    thing.close()
            except Exception:  # noqa: BLE001 - closing a broken connection
                pass
        self._sftp = self._client = None

    def check_folder(self):
        import stat

        try:
            mode = self._session().stat(self._c.path).st_mode
        except HostKeyRefused:
            raise
        except commit.PublishError:
            raise
        except OSError:
            raise commit.PublishError(f"sftp {self._c.host}: path {self._c.path!r} does not exist") from None
        if not stat.S_ISDIR(mode):
            raise commit.PublishError(f"sftp {self._c.host}: path {self._c.path!r} is not a folder")

    def _remote(self, name: str) -> str:
        return f"{self._c.path.rstrip('/')}/{name}" if self._c.path not in (".", "") else name

    # -- the storage protocol ---------------------------------------------------------------------
    def put_if_absent(self, relative: str, data: bytes, metadata: dict) -> bool:
        name = flat_name(self._c.export_name, relative)
        final = self._remote(name)
        last = None
        with self._lock:
            for attempt in range(1, self._c.max_attempts + 1):
                tmp = self._remote(f".{name}.tmp-{uuid.uuid4().hex}")
                try:
                    return self._publish(tmp, final, data)
                except HostKeyRefused:
                    raise
                except commit.PublishError as exc:
                    last = exc
                except (EOFError, OSError, Exception) as exc:  # noqa: BLE001 - a dropped connection or I/O error
                    last = commit.PublishError(redact(f"sftp {name}: {type(exc).__name__}: {exc}"))
                self.close()
                self._remove_quietly(name)
                time.sleep(min(0.2 * 2 ** attempt, 10))
        raise last

    def _publish(self, tmp: str, final: str, data: bytes) -> bool:
        sftp = self._session()
        sftp.putfo(io.BytesIO(data), tmp, file_size=len(data), confirm=True)  # confirm: size checked
        try:
            sftp.rename(tmp, final)  # standard SFTP rename: fails when ``final`` exists
        except OSError:
            try:
                existing = sftp.stat(final).st_size
            except OSError:
                raise commit.PublishError(f"sftp: renaming to {final} failed") from None
            sftp.remove(tmp)
            if existing != len(data):
                raise commit.PublishError(f"sftp: {final} exists with {existing} bytes, not this batch's "
                                          f"{len(data)}") from None
            return False
        size = sftp.stat(final).st_size
        if size != len(data):
            raise commit.PublishError(f"sftp: {final} has {size} bytes after publishing, expected {len(data)}")
        return True

    def _remove_quietly(self, name: str) -> None:
        """Remove temporary files a failed attempt left for ``name`` (best effort, on a new connection)."""
        try:
            sftp = self._session()
            folder = self._c.path if self._c.path not in ("", ".") else "."
            for entry in sftp.listdir(folder):
                if entry.startswith(f".{name}.tmp-"):
                    sftp.remove(self._remote(entry))
        except Exception:  # noqa: BLE001 - the next attempt reports a real problem
            self.close()

    def lookup(self, relative: str) -> dict | None:
        raise commit.LookupDenied(relative)  # never needed: sFTP names always carry the batch id

    def public_name(self, relative: str) -> str:
        """The file's name in the folder, which is what reports list (a consumer finds it there)."""
        return flat_name(self._c.export_name, relative)

    def list_names(self, folder: str) -> list[str]:
        """Relative names (as the writer gives them) of the files ``folder`` maps to in the one flat folder:
        ``_reports`` (the delivery reports), ``_ledger/<token>`` (a partition's ledger)."""
        prefix = self.public_name(f"{folder}/x")[:-1]
        with self._lock:
            entries = self._session().listdir(self._c.path if self._c.path not in ("", ".") else ".")
        names = [f"{folder}/{e[len(prefix):]}" for e in entries if e.startswith(prefix) and ".tmp-" not in e]
        if folder == commit.REPORT_DIR:
            names = [n for n in names if n.endswith("_delivery.report")]
        return sorted(names)

    def read(self, relative: str) -> bytes:
        buffer = io.BytesIO()
        with self._lock:
            self._session().getfo(self._remote(self.public_name(relative)), buffer)
        return buffer.getvalue()


def _load_private_key(text: str, passphrase: str | None):
    import paramiko

    text = text.replace("\\n", "\n")
    for kind in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
        try:
            return kind.from_private_key(io.StringIO(text), password=passphrase)
        except Exception:  # noqa: BLE001 - try the next key type
            continue
    raise ValueError("private_key is not a usable OpenSSH/PEM private key")
