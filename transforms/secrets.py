"""Secrets in integration configs: given inline or by reference, never printed.

A secret field (``secret_access_key``, ``service_account_json``, ``password``, ``private_key`` ...) accepts:

- ``"env:NAME"``: the value of environment variable ``NAME`` on the machine that uses it;
- ``"file:/path/to/file"``: the file's content;
- any other string: the value itself (kept in a ``Secret`` whose ``repr``/``str`` are masked).

A reference's value loses one trailing line break (``\n`` or ``\r\n``): Kubernetes secrets mounted as
files or variables usually end in one, and a key with a newline fails to authenticate (and gets printed
by clients in an escaped form). Other whitespace is kept.

References are resolved where the secret is used (the worker), so with references the secret never
enters the pipeline graph, its options or its logs. An inline value never enters the graph either: a
pickled inline ``Secret`` becomes a reference to an environment variable of the job's process (named
``BEAMHOUSE_INLINE_SECRET_<random>``), which local workers inherit; a job whose workers are on other
machines (Dataflow, a Flink cluster) cannot use inline secrets, and ``pipelines.deliver`` says so at start.

Every resolved value is registered with the log redactor, in every form clients print it (``printed_forms``:
as is, Python-escaped as in ``b'...'``, JSON-escaped, URL-encoded): ``install_log_redaction()`` (called by
the entry points) rewrites any log record that contains one, whichever library logged it (botocore at
DEBUG logs request headers, for instance), and ``redact`` is applied to every error the commands print.

Use::

    class Config(BaseModel):
        secret_access_key: SecretField | None = None
    config.secret_access_key.get()   # the value; raises SecretError naming the reference, never the value
"""
from __future__ import annotations

import logging
import os
import threading
import uuid
from typing import Annotated, Any
from urllib.parse import quote, quote_plus

from pydantic import PlainSerializer, PlainValidator

MASK = "***"
_REGISTERED: set[str] = set()
_LOCK = threading.Lock()
_MIN_REDACT_LEN = 4  # shorter values would redact ordinary words
INLINE_ENV_PREFIX = "BEAMHOUSE_INLINE_SECRET_"
ENCRYPTED = "encrypted:"  # encrypted:<key id>:<Fernet token>, as the management API's database holds it
_INLINE_NAMES: dict[str, str] = {}  # inline value -> the environment variable that carries it to workers


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
        return self._raw.startswith(("env:", "file:", ENCRYPTED))

    def describe(self) -> str:
        """Where the secret comes from, safe to print: ``env:NAME``, ``file:PATH``, ``encrypted`` or ``inline``."""
        if self._raw.startswith(ENCRYPTED):
            return "encrypted (management API)"
        return self._raw if self.is_reference else "inline"

    def get(self) -> str:
        raw = self._raw
        if raw.startswith(ENCRYPTED):
            # The management API's ciphertext, opened here with the master key of this machine's
            # environment (a worker's too): the value itself never travels.
            from transforms import configdb

            key_id, _, ciphertext = raw[len(ENCRYPTED):].partition(":")
            try:
                value = configdb.Keyring.from_environment().decrypt(key_id, ciphertext)
            except configdb.ConfigDBError as exc:
                raise SecretError(f"an encrypted secret cannot be opened here: {exc}") from None
        elif raw.startswith("env:"):
            value = os.environ.get(raw[4:])
            register(value)  # as given too: a client may print it before the line break is dropped
            value = _drop_line_break(value)
            if not value:
                raise SecretError(f"secret reference {raw} is not set in the environment")
        elif raw.startswith("file:"):
            try:
                with open(raw[5:], encoding="utf-8") as fh:
                    value = fh.read()
            except (OSError, UnicodeDecodeError) as exc:
                raise SecretError(f"secret reference {raw} cannot be read ({type(exc).__name__})") from None
            register(value)
            value = _drop_line_break(value)
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

    def __reduce__(self):
        # Pickled into DoFns as a reference: an inline value travels in the job's environment, never in
        # the pipeline graph (see the module docstring).
        return (Secret, (self._raw if self.is_reference else _inline_reference(self._raw),))


def _drop_line_break(value: str | None) -> str | None:
    if value and value.endswith("\n"):
        value = value[:-2] if value.endswith("\r\n") else value[:-1]
    return value


def _inline_reference(value: str) -> str:
    with _LOCK:
        name = _INLINE_NAMES.get(value)
        if name is None:
            name = _INLINE_NAMES[value] = INLINE_ENV_PREFIX + uuid.uuid4().hex[:16].upper()
            os.environ[name] = value
    return "env:" + name


def has_inline(model) -> list[str]:
    """The JSON paths (``a.b``) of the inline secrets in a pydantic model, recursively."""
    found = []
    for name in type(model).model_fields:
        value = getattr(model, name, None)
        if isinstance(value, Secret) and not value.is_reference:
            found.append(name)
        elif hasattr(type(value), "model_fields"):
            found += [f"{name}.{sub}" for sub in has_inline(value)]
    return found


def iter_secrets(model, prefix: str = ""):
    """``(path, Secret)`` for every secret in a pydantic model, recursively (``a.b``)."""
    for name in type(model).model_fields:
        value = getattr(model, name, None)
        path = f"{prefix}{name}"
        if isinstance(value, Secret):
            yield path, value
        elif hasattr(type(value), "model_fields"):
            yield from iter_secrets(value, path + ".")


def format_problem(field: str, value: str, passphrase: str | None = None) -> str | None:
    """Why a resolved secret cannot be what ``field`` needs, without network and without the value: a
    service-account key must be JSON of ``type`` ``service_account`` with a PEM private key; a
    ``private_key`` must be a PEM private key (opened with ``passphrase`` when given). None when it parses."""
    import orjson

    def pem_problem(pem: str, what: str) -> str | None:
        from cryptography.hazmat.primitives.serialization import load_pem_private_key

        try:
            load_pem_private_key(pem.encode(), password=passphrase.encode() if passphrase else None)
        except TypeError:
            return f"{what} is encrypted: give its passphrase"
        except (ValueError, Exception):  # noqa: BLE001 - any parse failure; the message could quote key bytes
            return f"{what} is not a readable PEM private key"
        return None

    if field.endswith("service_account_json"):
        try:
            info = orjson.loads(value)
        except orjson.JSONDecodeError:
            return "not JSON (a service account key file's content is expected)"
        if not isinstance(info, dict) or info.get("type") != "service_account":
            return 'not a service account key (JSON with "type": "service_account" expected)'
        missing = [k for k in ("private_key", "client_email") if not isinstance(info.get(k), str)]
        if missing:
            return f"service account key without {', '.join(missing)}"
        return pem_problem(info["private_key"], "its private_key")
    if field.endswith("private_key"):
        return pem_problem(value, "the key")
    return None


def printed_forms(value: str) -> set[str]:
    """``value`` and the forms clients print it in: Python-escaped (``repr`` of the text or of its UTF-8
    bytes, as botocore prints header values), JSON-escaped, URL-encoded (path and form style)."""
    import orjson

    forms = {value, repr(value)[1:-1], repr(value.encode("utf-8", "surrogatepass"))[2:-1],
             quote(value, safe=""), quote_plus(value), quote(value)}
    try:
        forms.add(orjson.dumps(value).decode()[1:-1])
    except orjson.JSONEncodeError:  # a lone surrogate: no JSON form
        pass
    return {f for f in forms if len(f) >= _MIN_REDACT_LEN}


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
            _REGISTERED.update(printed_forms(value))
            # Service-account JSON: its private key and key id appear on their own in library logs.
            if value.lstrip().startswith("{"):
                try:
                    import orjson

                    info = orjson.loads(value)
                    for key in ("private_key", "private_key_id"):
                        if isinstance(info.get(key), str) and len(info[key]) >= _MIN_REDACT_LEN:
                            _REGISTERED.update(printed_forms(info[key]))
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
