"""Secrets in integration configs: given inline or by reference, never printed.

A secret field (``secret_access_key``, ``service_account_json``, ``password``, ``private_key`` ...) accepts:

- ``"env:NAME"``: the value of environment variable ``NAME`` on the machine that uses it;
- ``"file:/path/to/file"``: the file's content (trailing newline removed);
- any other string: the value itself (kept in a ``Secret`` whose ``repr``/``str`` are masked).

References are resolved where the secret is used (the worker), so with references the secret never
enters the pipeline graph, its options or its logs. Every resolved value is registered with the log
redactor: ``install_log_redaction()`` (called by the entry points) rewrites any log record that contains
a registered value, whichever library logged it (botocore at DEBUG logs request headers, for instance).

Use::

    class Config(BaseModel):
        secret_access_key: SecretField | None = None
    config.secret_access_key.get()   # the value; raises SecretError naming the reference, never the value
"""
from __future__ import annotations

import logging
import os
import threading
from typing import Annotated, Any

from pydantic import PlainSerializer, PlainValidator

MASK = "***"
_REGISTERED: set[str] = set()
_LOCK = threading.Lock()
_MIN_REDACT_LEN = 4  # shorter values would redact ordinary words


class SecretError(ValueError):
    """A secret reference cannot be resolved. The message names the reference, never a value."""


class Secret:
    """A secret value or a reference to one. ``get()`` resolves it; printing shows only the kind."""

    __slots__ = ("_raw",)

    def __init__(self, raw: str):
        if not isinstance(raw, str) or raw == "":
            raise ValueError("a secret must be a non-empty string (a value, env:NAME or file:PATH)")
        if raw.startswith("env:") and not raw[4:]:
            raise ValueError("env: reference without a variable name")
        if raw.startswith("file:") and not raw[5:]:
            raise ValueError("file: reference without a path")
        self._raw = raw
        if not self.is_reference:
            register(raw)

    @property
    def is_reference(self) -> bool:
        return self._raw.startswith(("env:", "file:"))

    def describe(self) -> str:
        """Where the secret comes from, safe to print: ``env:NAME``, ``file:PATH`` or ``inline``."""
        return self._raw if self.is_reference else "inline"

    def get(self) -> str:
        raw = self._raw
        if raw.startswith("env:"):
            value = os.environ.get(raw[4:])
            if not value:
                raise SecretError(f"secret reference {raw} is not set in the environment")
        elif raw.startswith("file:"):
            try:
                with open(raw[5:], encoding="utf-8") as fh:
                    value = fh.read().rstrip("\r\n")
            except OSError as exc:
                raise SecretError(f"secret reference {raw} cannot be read ({type(exc).__name__})") from None
            if not value:
                raise SecretError(f"secret reference {raw} is empty")
        else:
            value = raw
        register(value)
        return value

    def check(self) -> str | None:
        """None when the secret resolves here, else the reason (for start-up checks)."""
        try:
            self.get()
        except SecretError as exc:
            return str(exc)
        return None

    def __repr__(self) -> str:
        return f"Secret({self.describe() if self.is_reference else MASK})"

    __str__ = __repr__

    def __eq__(self, other) -> bool:
        return isinstance(other, Secret) and other._raw == self._raw

    def __hash__(self) -> int:
        return hash(self._raw)

    def __reduce__(self):  # pickled into DoFns as it is (a reference stays a reference)
        return (Secret, (self._raw,))


def _to_secret(value: Any) -> Secret:
    if isinstance(value, Secret):
        return value
    if isinstance(value, dict):
        # An inline service-account key given as a JSON object rather than a string.
        import orjson

        value = orjson.dumps(value).decode()
    return Secret(value)


# A pydantic field type: validates into ``Secret``; dumps as the mask or the reference, never the value.
SecretField = Annotated[Secret, PlainValidator(_to_secret),
                        PlainSerializer(lambda s: s.describe() if s.is_reference else MASK, return_type=str)]


def register(value: str) -> None:
    """Remember a secret value so log records containing it are redacted."""
    if isinstance(value, str) and len(value) >= _MIN_REDACT_LEN:
        with _LOCK:
            _REGISTERED.add(value)
            # Service-account JSON: its private key and key id appear on their own in library logs.
            if value.lstrip().startswith("{"):
                try:
                    import orjson

                    info = orjson.loads(value)
                    for key in ("private_key", "private_key_id"):
                        if isinstance(info.get(key), str) and len(info[key]) >= _MIN_REDACT_LEN:
                            _REGISTERED.add(info[key])
                except Exception:  # noqa: BLE001 - not JSON: the whole value is registered already
                    pass


def redact(text: str) -> str:
    """``text`` with every registered secret replaced by the mask."""
    if not _REGISTERED or not isinstance(text, str):
        return text
    with _LOCK:
        values = sorted(_REGISTERED, key=len, reverse=True)
    for value in values:
        if value in text:
            text = text.replace(value, MASK)
    return text


_installed = False


def install_log_redaction() -> None:
    """Redact registered secrets from every log record created in this process (idempotent)."""
    global _installed
    with _LOCK:
        if _installed:
            return
        _installed = True
    previous = logging.getLogRecordFactory()

    def factory(*args, **kwargs):
        record = previous(*args, **kwargs)
        if _REGISTERED:
            try:
                message = record.getMessage()
            except Exception:  # noqa: BLE001 - leave malformed records to logging's own error path
                return record
            cleaned = redact(message)
            if cleaned != message:
                record.msg, record.args = cleaned, None
        return record

    logging.setLogRecordFactory(factory)
