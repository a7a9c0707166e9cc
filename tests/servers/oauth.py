"""A token endpoint of the test suite's own and service-account keys that point at it, so that
google-auth's real service-account flow (a JWT grant signed with the key) runs offline."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa


class TokenServer:
    """Answers every POST with an access token and records the grant (``grants``)."""

    def __init__(self):
        self.grants: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                outer.grants.append(parse_qs(self.rfile.read(int(self.headers["Content-Length"])).decode()))
                body = json.dumps({"access_token": "test-token", "token_type": "Bearer", "expires_in": 3600}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/token"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self):
        self._server.shutdown()
        self._server.server_close()

    def service_account(self, key_id: str = "kid-0123456789abcdef", project: str = "test-proj") -> dict:
        """A fresh service-account key (RSA 2048) whose token_uri is this server."""
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
        return {"type": "service_account", "project_id": project, "private_key_id": key_id, "private_key": pem,
                "client_email": f"writer@{project}.iam.gserviceaccount.com", "client_id": "1", "token_uri": self.url}

    @property
    def jwt_grants(self) -> int:
        return sum(1 for g in self.grants if g.get("grant_type") == ["urn:ietf:params:oauth:grant-type:jwt-bearer"])
