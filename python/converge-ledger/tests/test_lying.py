"""The verifying client against a ledger that lies: the Rust e2e "lying server" cases, again in
Python. Three real nodes hold one context: A the honest history, B the same first entry and
then a rewritten second one, C the same first two entries and a different third (a fork of the
same size). A TCP proxy in front of them switches which one answers, while one verifying client
keeps its pins."""

from __future__ import annotations

import pathlib
import socket
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import pytest

from converge_ledger import Client, LedgerError, Unavailable, VerificationError
from ledger_node import Node

T = TypeVar("T")


class Proxy:
    """Forwards each connection to the current upstream; switching drops the open ones."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = "127.0.0.1:%d" % self.listener.getsockname()[1]
        self.open: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            host, port = self.upstream.rsplit(":", 1)
            try:
                server = socket.create_connection((host, int(port)))
            except OSError:
                client.close()
                continue
            with self.lock:
                self.open += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def switch(self, upstream: str) -> None:
        self.upstream = upstream
        with self.lock:
            for s in self.open:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()
            self.open = []

    def close(self) -> None:
        self.listener.close()
        self.switch(self.upstream)


def call(f: Callable[[], T]) -> T:
    """Calls ``f`` until it gets past a dropped connection (the proxy just switched)."""
    for _ in range(100):
        try:
            return f()
        except Unavailable:
            time.sleep(0.02)
    return f()


def refused(what: str, f: Callable[[], object]) -> None:
    with pytest.raises(VerificationError) as e:
        call(f)
    assert "rewritten or forked" in e.value.message, f"{what}: {e.value.message}"


def test_the_verifying_client_refuses_a_rewritten_or_forked_history(tmp_path: pathlib.Path) -> None:
    a, b, c = (Node(tmp_path / name) for name in "abc")
    proxy = Proxy(a.address)
    try:
        with Client(a.url) as ca, Client(b.url) as cb, Client(c.url) as cc:
            ca.append("ctx", "k", "e1")
            cb.load("ctx", ca.snapshot("ctx").snapshot, fail_if_exists=True)
            ca.append("ctx", "k", "e2")
            cc.load("ctx", ca.snapshot("ctx").snapshot, fail_if_exists=True)
            ca.append("ctx", "k", "e3")
            for payload in ["e2 rewritten", "e3", "e4"]:
                cb.append("ctx", "k", payload)
            cc.append("ctx", "k", "e3 forked")

            with Client(f"http://{proxy.address}", verify=True) as client:
                assert call(lambda: client.tree_head("ctx")).tree_size == 3, "pins A at 3"
                call(lambda: client.get("ctx"))

                # B rewrote entry 2 and grew: its newer head is not consistent with the pin.
                proxy.switch(b.address)
                refused("B's tree head", lambda: client.tree_head("ctx"))
                refused("B's entries from the start", lambda: client.get("ctx"))
                refused("B's entries newest first", lambda: client.get("ctx", newest_first=True))
                refused("B's snapshot", lambda: client.snapshot("ctx"))
                refused("B's consistency proof", lambda: client.prove_consistency("ctx", 1, 4))
                refused("B's listing", lambda: client.list_contexts())

                # C forked at entry 3: the same size, another root.
                proxy.switch(c.address)
                refused("C's tree head", lambda: client.tree_head("ctx"))
                refused("C's inclusion proof", lambda: client.prove_inclusion("ctx", 3))

                # The honest node growing is accepted, with a consistency proof, and pinned.
                proxy.switch(a.address)
                ca.append("ctx", "k", "e4")
                ca.append("ctx", "k", "e5")
                assert call(lambda: client.tree_head("ctx")).tree_size == 5
                call(lambda: client.get("ctx"))
                call(lambda: client.get("ctx", newest_first=True))
                call(lambda: client.prove_inclusion("ctx", 2))
                call(lambda: client.prove_consistency("ctx", 2, 5))
                # And now even B's first lie is one size behind the pin: still refused (B
                # cannot prove its head a prefix of the pinned one).
                proxy.switch(b.address)
                with pytest.raises(LedgerError):
                    call(lambda: client.tree_head("ctx"))
    finally:
        proxy.close()
        for n in (a, b, c):
            n.stop()
