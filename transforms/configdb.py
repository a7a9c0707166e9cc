"""The configuration database behind the management API (``pipelines.admin``), also read by the jobs
(``--integrations sqlite:///PATH`` or ``postgresql://...``).

What it holds (SQLAlchemy Core; SQLite embedded, PostgreSQL in production, through pg8000):

- ``integrations``: each integration's body as it was accepted, with every inline secret replaced by
  ``"***"`` (``env:``/``file:`` references are not secrets and stay as given), plus a version for
  optimistic concurrency;
- ``secrets``: the inline secrets, each encrypted with Fernet (AES-128-CBC + HMAC-SHA256) under the master
  key, with the key's id so keys can rotate (``rotate``);
- ``audit``: who (token id) did what to which integration and when, with the names of the fields changed,
  never values;
- ``deliveries``: each run's per-integration summary, newest first.
- ``tokens``: API tokens from a file (``name:token`` lines), stored as SHA-256 digests.

Keys: ``BEAMHOUSE_MASTER_KEY`` is 32 random bytes, URL-safe base64, as
``python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"`` prints;
``BEAMHOUSE_PREVIOUS_MASTER_KEYS`` (comma-separated) holds keys still able to decrypt during a rotation.
"""
from __future__ import annotations

import hashlib
import os
import time
from typing import Any

import orjson
import sqlalchemy as sa

from transforms.secrets import MASK, Secret

MASTER_KEY_ENV = "BEAMHOUSE_MASTER_KEY"
PREVIOUS_KEYS_ENV = "BEAMHOUSE_PREVIOUS_MASTER_KEYS"
URL_SCHEMES = ("sqlite://", "postgresql://", "postgresql+pg8000://", "postgres://")

metadata = sa.MetaData()
integrations_table = sa.Table(
    "integrations", metadata,
    sa.Column("integration_id", sa.String(64), primary_key=True),
    sa.Column("vendor", sa.String(32), nullable=False, index=True),
    sa.Column("enabled", sa.Boolean, nullable=False, index=True),
    sa.Column("body", sa.Text, nullable=False),  # JSON, inline secrets masked
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)
secrets_table = sa.Table(
    "secrets", metadata,
    sa.Column("integration_id", sa.String(64), sa.ForeignKey("integrations.integration_id", ondelete="CASCADE"),
              primary_key=True),
    sa.Column("path", sa.String(256), primary_key=True),  # JSON path inside the body: config.password
    sa.Column("key_id", sa.String(16), nullable=False),
    sa.Column("ciphertext", sa.Text, nullable=False),
)
audit_table = sa.Table(
    "audit", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("token_id", sa.String(64), nullable=False),
    sa.Column("action", sa.String(16), nullable=False),
    sa.Column("integration_id", sa.String(64), nullable=False),
    sa.Column("fields", sa.Text, nullable=False),  # JSON list of changed field paths, never values
)
deliveries_table = sa.Table(
    "deliveries", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("integration_id", sa.String(64), nullable=False, index=True),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("summary", sa.Text, nullable=False),
)
tokens_table = sa.Table(
    "tokens", metadata,
    sa.Column("token_id", sa.String(64), primary_key=True),
    sa.Column("digest", sa.String(64), nullable=False, unique=True),
)


class ConfigDBError(RuntimeError):
    """The database or the master key cannot be used. Messages never hold a secret or a key."""


def is_database_url(value: str) -> bool:
    return isinstance(value, str) and value.startswith(URL_SCHEMES)


def engine_for(url: str) -> sa.Engine:
    """An engine for ``url``; PostgreSQL through the pure-Python pg8000 driver. The tables are created if
    missing."""
    if url.startswith(("postgresql://", "postgres://")):
        url = "postgresql+pg8000://" + url.split("://", 1)[1]
    kwargs = {"connect_args": {"timeout": 30}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    engine = sa.create_engine(url, future=True, **kwargs)
    if url.startswith("sqlite"):
        @sa.event.listens_for(engine, "connect")
        def _pragmas(conn, _):
            # Foreign keys on (secrets go with their integration); WAL so readers don't block the API.
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA journal_mode=WAL")
    metadata.create_all(engine)
    return engine


class Keyring:
    """Fernet keys by id: the current one encrypts, any of them decrypts."""

    def __init__(self, current: str, previous: list[str] | None = None):
        from cryptography.fernet import Fernet

        self._keys: dict[str, Any] = {}
        try:
            self.current_id = self._add(Fernet, current)
            for key in previous or []:
                self._add(Fernet, key)
        except (ValueError, TypeError):
            raise ConfigDBError(f"{MASTER_KEY_ENV} (or a previous key) is not 32 bytes of URL-safe base64; make "
                                "one with: python -c \"from cryptography.fernet import Fernet; "
                                "print(Fernet.generate_key().decode())\"") from None

    def _add(self, fernet, key: str) -> str:
        key_id = hashlib.sha256(key.strip().encode()).hexdigest()[:12]
        self._keys[key_id] = fernet(key.strip().encode())
        return key_id

    @classmethod
    def from_environment(cls) -> Keyring:
        current = os.environ.get(MASTER_KEY_ENV, "")
        if not current.strip():
            raise ConfigDBError(f"{MASTER_KEY_ENV} is not set: the configuration database's secrets are "
                                "encrypted with it")
        previous = [k for k in os.environ.get(PREVIOUS_KEYS_ENV, "").split(",") if k.strip()]
        return cls(current, previous)

    def encrypt(self, value: str) -> tuple[str, str]:
        return self.current_id, self._keys[self.current_id].encrypt(value.encode()).decode()

    def decrypt(self, key_id: str, ciphertext: str) -> str:
        from cryptography.fernet import InvalidToken

        fernet = self._keys.get(key_id)
        if fernet is None:
            raise ConfigDBError(f"a secret is encrypted with key {key_id}, which is neither {MASTER_KEY_ENV} nor in "
                                f"{PREVIOUS_KEYS_ENV}")
        try:
            return fernet.decrypt(ciphertext.encode()).decode()
        except InvalidToken:
            raise ConfigDBError(f"a secret encrypted with key {key_id} does not decrypt (wrong key or "
                                "tampered data)") from None


def secret_paths(model, raw) -> dict[str, Secret]:
    """The secrets in a validated model, by their path in the raw body it came from (``a.b``, ``a[0].b``).
    ``raw`` decides the key (a field's alias or its name, as the body spelled it)."""
    found: dict[str, Secret] = {}
    fields = type(model).model_fields if hasattr(type(model), "model_fields") else {}
    if not isinstance(raw, dict):
        return found
    for name, field in fields.items():
        key = field.alias if field.alias and field.alias in raw else name
        if key not in raw:
            continue
        value = getattr(model, name, None)
        if isinstance(value, Secret):
            found[key] = value
        elif hasattr(type(value), "model_fields"):
            found.update({f"{key}.{k}": v for k, v in secret_paths(value, raw[key]).items()})
        elif isinstance(value, dict) and isinstance(raw[key], dict):
            for sub_key, sub in value.items():
                if hasattr(type(sub), "model_fields"):
                    found.update({f"{key}.{sub_key}.{k}": v for k, v in secret_paths(sub, raw[key].get(sub_key)).items()})
    return found


def get_path(body: dict, path: str):
    node = body
    for part in path.split("."):
        node = node[part]
    return node


def set_path(body: dict, path: str, value) -> None:
    parts = path.split(".")
    node = body
    for part in parts[:-1]:
        node = node[part]
    node[parts[-1]] = value


def split_secrets(body: dict, integration) -> tuple[dict, dict[str, str]]:
    """``(body with inline secrets masked, {"config.<path>": value})`` for a validated ``integration`` whose
    raw body is ``body``. References (``env:``/``file:``) stay in the body: they are not secrets."""
    masked = orjson.loads(orjson.dumps(body))
    inline = {}
    for path, secret in secret_paths(integration.config, body.get("config")).items():
        if not secret.is_reference:
            inline[f"config.{path}"] = secret.get()
            set_path(masked, f"config.{path}", MASK)
    return masked, inline


def masked_paths(body: dict) -> list[str]:
    """Paths in a stored body whose value is the mask (the encrypted secrets)."""
    out = []

    def walk(node, prefix):
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{prefix}.{k}" if prefix else k)
        elif node == MASK:
            out.append(prefix)
    walk(body, "")
    return out


def stored_secrets(conn, integration_id: str) -> dict[str, tuple[str, str]]:
    rows = conn.execute(sa.select(secrets_table.c.path, secrets_table.c.key_id, secrets_table.c.ciphertext)
                        .where(secrets_table.c.integration_id == integration_id)).all()
    return {r.path: (r.key_id, r.ciphertext) for r in rows}


def write_secrets(conn, keyring: Keyring, integration_id: str, values: dict[str, str],
                  keep: dict[str, tuple[str, str]] | None = None) -> None:
    """Replace the integration's secrets by ``values`` (encrypted now) plus ``keep`` (already encrypted)."""
    conn.execute(sa.delete(secrets_table).where(secrets_table.c.integration_id == integration_id))
    rows = [{"integration_id": integration_id, "path": p, "key_id": k, "ciphertext": c}
            for p, (k, c) in (keep or {}).items() if p not in values]
    for path, value in values.items():
        key_id, ciphertext = keyring.encrypt(value)
        rows.append({"integration_id": integration_id, "path": path, "key_id": key_id, "ciphertext": ciphertext})
    if rows:
        conn.execute(sa.insert(secrets_table), rows)


def audit(conn, token_id: str, action: str, integration_id: str, fields: list[str]) -> None:
    conn.execute(sa.insert(audit_table).values(at=time.time(), token_id=token_id, action=action,
                                               integration_id=integration_id, fields=orjson.dumps(sorted(fields)).decode()))


def stored_bodies(url: str, keyring: Keyring | None = None) -> list[dict]:
    """Every stored integration's body for a job: each secret as an ``encrypted:<key id>:<token>`` reference,
    which whoever uses it (the launcher's start-up checks, a worker) opens with the master key of its own
    environment (``transforms.secrets``), so the value never travels, not even in the pipeline graph; with
    ``keyring``, the values themselves (the API's own checks)."""
    from transforms.secrets import ENCRYPTED

    engine = engine_for(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.select(integrations_table.c.integration_id, integrations_table.c.body)
                                .order_by(integrations_table.c.integration_id)).all()
            bodies = []
            for row in rows:
                body = orjson.loads(row.body)
                for path, (key_id, ciphertext) in stored_secrets(conn, row.integration_id).items():
                    set_path(body, path, keyring.decrypt(key_id, ciphertext) if keyring is not None
                             else f"{ENCRYPTED}{key_id}:{ciphertext}")
                bodies.append(body)
            return bodies
    finally:
        engine.dispose()


def record_deliveries(url: str, summary: dict) -> None:
    """Store a run's per-integration figures (``GET /v1/admin/integrations/{id}/deliveries``)."""
    engine = engine_for(url)
    try:
        now = time.time()
        with engine.begin() as conn:
            rows = [{"integration_id": iid, "at": now, "summary": orjson.dumps(
                {**entry, "input": summary.get("input"), "duplicates": summary.get("duplicates")}).decode()}
                for iid, entry in summary.get("integrations", {}).items()]
            if rows:
                conn.execute(sa.insert(deliveries_table), rows)
    finally:
        engine.dispose()


def rotate(url: str, keyring: Keyring) -> int:
    """Re-encrypt every secret under the keyring's current key; returns how many were re-encrypted."""
    engine = engine_for(url)
    done = 0
    try:
        with engine.begin() as conn:
            rows = conn.execute(sa.select(secrets_table)).all()
            for row in rows:
                if row.key_id == keyring.current_id:
                    continue
                key_id, ciphertext = keyring.encrypt(keyring.decrypt(row.key_id, row.ciphertext))
                conn.execute(sa.update(secrets_table).where(
                    (secrets_table.c.integration_id == row.integration_id) & (secrets_table.c.path == row.path))
                    .values(key_id=key_id, ciphertext=ciphertext))
                done += 1
    finally:
        engine.dispose()
    return done


def display_url(url: str) -> str:
    """``url`` without a password, for messages."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - an unparsable URL: show only its scheme
        return url.split("://", 1)[0] + "://..."
