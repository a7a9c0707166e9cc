"""An sFTP server for the tests: asyncssh's own SFTP server, in a thread of the test process, on a loopback
port, serving a local folder as its root.

    server = SFTPTestServer(root, username="export", password="pw").start()
    server.port, server.host_key_line ("ssh-ed25519 AAAA..."), server.drop_after_bytes = 1000 (one-shot)

asyncssh's standard ``rename`` refuses an existing target (as OpenSSH's sftp-server does), which the
destination relies on. ``drop_after_bytes`` aborts the SSH connection once that many bytes of file data
have been written, mid-upload (a dropped connection), once.
"""
from __future__ import annotations

import asyncio
import threading

import asyncssh


class SFTPTestServer:
    def __init__(self, root: str, username: str, password: str | None = None, client_public_key: str | None = None):
        self.root = root
        self.username = username
        self.password = password
        self.client_public_key = client_public_key
        self.host_key = asyncssh.generate_private_key("ssh-ed25519")
        self.host_key_line = self.host_key.export_public_key().decode().strip()
        self.drop_after_bytes: int | None = None
        self.drops = 0
        self.logins = 0
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._server = None
        self._ready = threading.Event()

    # -- asyncssh plumbing ------------------------------------------------------------------------
    def _sftp_factory(self, chan):
        server = self

        class FaultySFTPServer(asyncssh.SFTPServer):
            written = 0

            def write(self, file_obj, offset, data):
                if server.drop_after_bytes is not None:
                    FaultySFTPServer.written += len(data)
                    if FaultySFTPServer.written >= server.drop_after_bytes:
                        server.drop_after_bytes = None
                        server.drops += 1
                        FaultySFTPServer.written = 0
                        file_obj.write(data[: len(data) // 2])  # part of the data reached the disk
                        chan.get_connection().abort()
                        return None
                return super().write(file_obj, offset, data)

        return FaultySFTPServer(chan, chroot=self.root)

    def _ssh_server(self):
        server = self

        class Auth(asyncssh.SSHServer):
            def begin_auth(self, username):
                return True

            def password_auth_supported(self):
                return server.password is not None

            def validate_password(self, username, password):
                ok = username == server.username and password == server.password
                server.logins += ok
                return ok

            def public_key_auth_supported(self):
                return server.client_public_key is not None

            def validate_public_key(self, username, key):
                ok = username == server.username and \
                    key.export_public_key().decode().split()[:2] == server.client_public_key.split()[:2]
                server.logins += ok
                return ok

        return Auth()

    async def _listen(self):
        self._server = await asyncssh.listen("127.0.0.1", 0, server_host_keys=[self.host_key],
                                             server_factory=self._ssh_server, sftp_factory=self._sftp_factory,
                                             allow_scp=False)
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()

    def start(self) -> SFTPTestServer:
        def run():
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(self._listen())
            self._loop.run_forever()

        threading.Thread(target=run, daemon=True).start()
        if not self._ready.wait(15):
            raise RuntimeError("sFTP test server did not start")
        return self

    def stop(self) -> None:
        async def close():
            self._server.close()
            await self._server.wait_closed()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
