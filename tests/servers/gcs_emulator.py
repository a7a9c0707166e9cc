"""Run gcp-storage-emulator with the two GCS behaviours the delivery tests depend on and it lacks.

    python -m tests.servers.gcs_emulator --port PORT [--unusable-kms-key NAME ...]

The emulator ignores ``ifGenerationMatch`` and ``kmsKeyName`` on uploads. GCS (documented at
cloud.google.com/storage/docs/request-preconditions and /docs/encryption/customer-managed-keys):

- ``ifGenerationMatch=0`` creates only: if the object exists the upload answers 412 and nothing changes;
- ``kmsKeyName`` encrypts the object with that key and the object resource reports it; an unusable
  (disabled, destroyed, not permitted) key fails the upload with 400/403 naming Cloud KMS.

This launcher adds exactly those two checks in front of the emulator's own insert handler and records
the key on the stored object. ``--unusable-kms-key`` marks keys that behave as disabled.
"""
from __future__ import annotations

import argparse
import os
import signal
import threading
from http import HTTPStatus

from gcp_storage_emulator.exceptions import NotFound
from gcp_storage_emulator.handlers import objects

_original_insert = objects.insert
UNUSABLE_KEYS: set[str] = set()


def _object_name(request):
    if "name" in request.query:
        return request.query["name"][0]
    data = request.data
    if isinstance(data, dict):
        meta = data.get("meta")
        if isinstance(meta, dict):
            return meta.get("name")
        return data.get("name")
    return None


def _error(response, status, reason, message):
    response.status = status
    response.json({"error": {"code": int(status), "message": message,
                             "errors": [{"domain": "global", "reason": reason, "message": message}]}})


def insert(request, response, storage, *args, **kwargs):
    bucket = request.params["bucket_name"]
    name = _object_name(request)
    kms = request.query.get("kmsKeyName", [None])[0]
    if kms is not None and kms in UNUSABLE_KEYS:
        return _error(response, HTTPStatus.BAD_REQUEST, "invalid",
                      f"Cloud KMS key {kms} is disabled, destroyed, or not permitted for use")
    if request.query.get("ifGenerationMatch") == ["0"] and name is not None:
        try:
            storage.get_file_obj(bucket, name)
            return _error(response, HTTPStatus.PRECONDITION_FAILED, "conditionNotMet",
                          "At least one of the pre-conditions you specified did not hold.")
        except NotFound:
            pass
    result = _original_insert(request, response, storage, *args, **kwargs)
    if kms is not None and name is not None and response.status == HTTPStatus.OK:
        try:
            obj = storage.get_file_obj(bucket, name)
            obj["kmsKeyName"] = kms
            response.json(obj)
        except NotFound:
            pass
    return result


objects.insert = insert  # before the server module builds its routing table


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--unusable-kms-key", action="append", default=[])
    args = parser.parse_args()
    UNUSABLE_KEYS.update(args.unusable_kms_key)
    from gcp_storage_emulator.server import create_server

    server = create_server(args.host, args.port, in_memory=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    server.start()
    print("ready", flush=True)
    try:
        stop.wait()
    finally:
        server.stop()
        os._exit(0)  # the emulator's API thread is not a daemon


if __name__ == "__main__":
    main()
