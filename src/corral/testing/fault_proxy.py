"""A TCP proxy that fails on demand: in front of PostgreSQL or Redis it makes an outage or a silent network.

proxy = FaultProxy(("127.0.0.1", 5432))   # connect to 127.0.0.1:proxy.port instead
proxy.outage()    # cut every connection and refuse new ones (a crash, a restart)
proxy.silence()   # keep connections open but forward nothing (packets dropped, not refused)
proxy.restore()
"""

from __future__ import annotations

import contextlib
import socket
import threading


class FaultProxy:
    """Forwards loopback TCP to `target` until told to fail."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.down = False
        self.silent = False
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.down:
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                if not self.silent:
                    dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def _cut(self) -> None:
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
                conn.close()

    def outage(self) -> None:
        self.down = True
        self._cut()

    def silence(self) -> None:
        self.silent = True

    def restore(self) -> None:
        """Forward again; connections that lived through a silence are cut (their streams lost bytes)."""
        if self.silent:
            self.silent = False
            self._cut()
        self.down = False

    def close(self) -> None:
        self.outage()
        self.listener.close()
