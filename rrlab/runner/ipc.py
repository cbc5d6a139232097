"""The channel between the runner and its child processes: JSON lines over loopback TCP.

Why a socket and not stdin/stdout or a multiprocessing pipe: a child may run under
memray, line-profiler or py-spy, which own the process's start-up and may print to its
standard streams. A socket the child opens itself, found through environment variables,
survives any wrapper. The connection doubles as a lifeline: when the runner dies the
child reads EOF and exits, so no child outlives its runner.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import secrets
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

ENV_ADDRESS = "RRLAB_CONTROL_ADDRESS"
ENV_TOKEN = "RRLAB_CONTROL_TOKEN"
ENV_NAME = "RRLAB_PROCESS_NAME"


@dataclass
class Message:
    """A message from a child, tagged with the child's name."""

    sender: str
    body: dict[str, Any]


@dataclass
class _Peer:
    name: str
    sock: socket.socket
    lock: threading.Lock = field(default_factory=threading.Lock)


class ControlServer:
    """The runner's end: accepts children, queues their messages, sends them commands."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self._listener.getsockname()[1]}"
        self.token = secrets.token_hex(16)
        self.messages: queue.Queue[Message] = queue.Queue()
        self._peers: dict[str, _Peer] = {}
        self._peers_lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept_loop, name="ipc-accept", daemon=True).start()

    def child_environment(self, name: str) -> dict[str, str]:
        """Environment variables that let a child named ``name`` connect back."""
        return {ENV_ADDRESS: self.address, ENV_TOKEN: self.token, ENV_NAME: name}

    def connected(self, name: str) -> bool:
        with self._peers_lock:
            return name in self._peers

    def send(self, name: str, body: dict[str, Any]) -> bool:
        """Send a command to one child; False when it is not connected (any more)."""
        with self._peers_lock:
            peer = self._peers.get(name)
        if peer is None:
            return False
        data = (json.dumps(body) + "\n").encode()
        try:
            with peer.lock:
                peer.sock.sendall(data)
        except OSError:
            return False
        return True

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        with self._peers_lock:
            peers = list(self._peers.values())
            self._peers.clear()
        for peer in peers:
            _close_quietly(peer.sock)

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        lines = _read_lines(sock)
        hello = next(lines, None)
        if not hello or hello.get("token") != self.token or not hello.get("name"):
            _close_quietly(sock)
            return
        name = str(hello["name"])
        with self._peers_lock:
            self._peers[name] = _Peer(name, sock)
        self.messages.put(Message(name, {"type": "connected", "pid": hello.get("pid")}))
        for body in lines:
            self.messages.put(Message(name, body))
        with self._peers_lock:
            if self._peers.get(name) and self._peers[name].sock is sock:
                del self._peers[name]
        self.messages.put(Message(name, {"type": "disconnected"}))
        _close_quietly(sock)


class ChildChannel:
    """A child's end: sends reports to the runner, receives its commands.

    Commands arrive on a background thread into :attr:`commands`. When the runner's
    end closes (the runner exited or died), ``on_lost`` is called — by default it
    ends the process at once, since a child must never outlive its runner.
    """

    def __init__(self, address: str, token: str, name: str, on_lost=None) -> None:
        host, _, port = address.rpartition(":")
        self.name = name
        self._sock = socket.create_connection((host, int(port)), timeout=10)
        self._sock.settimeout(None)
        self._send_lock = threading.Lock()
        self.commands: queue.Queue[dict[str, Any]] = queue.Queue()
        self._on_lost = on_lost or _exit_now
        self.send({"token": token, "name": name, "pid": os.getpid()})
        threading.Thread(target=self._read_loop, name="ipc-read", daemon=True).start()

    @classmethod
    def from_environment(cls, on_lost=None) -> ChildChannel | None:
        """Connect using the variables the runner set; None when started standalone."""
        address = os.environ.get(ENV_ADDRESS)
        if not address:
            return None
        return cls(address, os.environ[ENV_TOKEN], os.environ[ENV_NAME], on_lost)

    def send(self, body: dict[str, Any]) -> None:
        data = (json.dumps(body, default=str) + "\n").encode()
        try:
            with self._send_lock:
                self._sock.sendall(data)
        except OSError:
            self._on_lost()

    def next_command(self, timeout: float | None = None) -> dict[str, Any] | None:
        try:
            return self.commands.get(timeout=timeout)
        except queue.Empty:
            return None

    def close(self) -> None:
        self._on_lost = lambda: None
        _close_quietly(self._sock)

    def _read_loop(self) -> None:
        for body in _read_lines(self._sock):
            self.commands.put(body)
        self._on_lost()


def _read_lines(sock: socket.socket) -> Iterator[dict[str, Any]]:
    buffer = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except OSError:
            return
        if not chunk:
            return
        buffer += chunk
        *complete, buffer = buffer.split(b"\n")
        for line in complete:
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError:
                    continue


def _close_quietly(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


def _exit_now() -> None:
    os._exit(3)
