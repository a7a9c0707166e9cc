"""Files on an sFTP server: written under a temporary name, then renamed (standard rename never
overwrites); host keys verified; partition folders flattened into file names (``flat_name``)."""
from __future__ import annotations

import base64
import io
import logging
import threading
import uuid
from typing import TYPE_CHECKING

from transforms import ledger, retry
from transforms.commit import REPORT_DIR
from transforms.secrets import redact
from transforms.storage import LookupDenied, PublishError

if TYPE_CHECKING:
    from transforms.sinks.sftp import SFTPConfig

log = logging.getLogger("beamhouse.sinks.sftp")


class HostKeyRefused(PublishError):
    """The server's host key is not the configured one (unknown or changed)."""


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
    if parts[0] == REPORT_DIR:
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
            raise PublishError(redact(f"sftp {where}: {type(exc).__name__}: {exc}")) from None
        except OSError as exc:
            client.close()
            raise PublishError(redact(f"sftp {where}: cannot connect ({exc})")) from None
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
        except PublishError:
            raise
        except OSError:
            raise PublishError(f"sftp {self._c.host}: path {self._c.path!r} does not exist") from None
        if not stat.S_ISDIR(mode):
            raise PublishError(f"sftp {self._c.host}: path {self._c.path!r} is not a folder")

    def _remote(self, name: str) -> str:
        return f"{self._c.path.rstrip('/')}/{name}" if self._c.path not in (".", "") else name

    # -- the storage protocol ---------------------------------------------------------------------
    def put_if_absent(self, relative: str, data: bytes, metadata: dict) -> bool:
        name = flat_name(self._c.export_name, relative)
        final = self._remote(name)
        def once() -> bool:
            tmp = self._remote(f".{name}.tmp-{uuid.uuid4().hex}")
            try:
                return self._publish(tmp, final, data)
            except (HostKeyRefused, PublishError):
                raise
            except (EOFError, OSError, Exception) as exc:  # noqa: BLE001 - a dropped connection or I/O error
                raise PublishError(redact(f"sftp {name}: {type(exc).__name__}: {exc}")) from None

        def reset() -> None:  # after a failed attempt: a new connection, no temporary file left
            self.close()
            self._remove_quietly(name)

        with self._lock:
            try:
                for attempt in retry.attempts(self._c.max_attempts, lambda e: not isinstance(e, HostKeyRefused),
                                              first_wait=0.4, max_wait=10, between=reset,
                                              what=f"sftp upload {name}", logger=log):
                    with attempt:
                        return once()
            except PublishError as exc:
                if not isinstance(exc, HostKeyRefused):
                    reset()  # the last attempt's too
                raise
        raise AssertionError("unreachable: the last attempt returned or raised")

    def _publish(self, tmp: str, final: str, data: bytes) -> bool:
        sftp = self._session()
        sftp.putfo(io.BytesIO(data), tmp, file_size=len(data), confirm=True)  # confirm: size checked
        try:
            sftp.rename(tmp, final)  # standard SFTP rename: fails when ``final`` exists
        except OSError:
            try:
                existing = sftp.stat(final).st_size
            except OSError:
                raise PublishError(f"sftp: renaming to {final} failed") from None
            sftp.remove(tmp)
            if existing != len(data):
                raise PublishError(f"sftp: {final} exists with {existing} bytes, not this batch's "
                                          f"{len(data)}") from None
            return False
        size = sftp.stat(final).st_size
        if size != len(data):
            raise PublishError(f"sftp: {final} has {size} bytes after publishing, expected {len(data)}")
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
        raise LookupDenied(relative)  # never needed: sFTP names always carry the batch id

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
        if folder == REPORT_DIR:
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
