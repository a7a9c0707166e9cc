"""What every vendor's client shares: one per-process cache of client objects, and one way to turn a
``service_account_json`` secret into Google credentials.

    client = clients.cached(("bigquery", project, endpoint, key_text), lambda: bigquery.Client(...))
    creds, project = clients.google_credentials(config.service_account_json, endpoint_url, SCOPES)

Clients are made on the worker, from secrets resolved there (``transforms.secrets``), and reused by every
bundle of the process: the cache key holds what makes two clients differ (including the resolved key, kept
in this process's memory only).
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
_cache: dict[tuple, object] = {}
_lock = threading.Lock()


def cached(key: tuple, make: Callable[[], T]) -> T:
    """The client cached under ``key``, made by ``make()`` the first time (once, under a lock)."""
    with _lock:
        if key not in _cache:
            _cache[key] = make()
        return _cache[key]


class UnusableKey(ValueError):
    """A ``service_account_json`` that is no usable service-account key (the message never holds it)."""


def google_credentials(key_text: str | None, endpoint_url: str | None, scopes) -> tuple[object, str | None]:
    """``(credentials, the key's project id or None)``: from a service-account key's JSON text; anonymous
    for an emulator (``endpoint_url`` without a key); else Application Default Credentials (a Dataflow
    worker's service account, ``gcloud auth application-default login``). Raises ``UnusableKey``."""
    if key_text is not None:
        import orjson
        from google.oauth2 import service_account

        try:
            info = orjson.loads(key_text)
            return service_account.Credentials.from_service_account_info(info, scopes=scopes), info.get("project_id")
        except Exception as exc:  # noqa: BLE001 - never echo the key
            raise UnusableKey(f"service_account_json is not a usable service account key ({type(exc).__name__})") \
                from None
    if endpoint_url:
        from google.auth.credentials import AnonymousCredentials

        return AnonymousCredentials(), None
    import google.auth

    return google.auth.default(scopes=scopes)
