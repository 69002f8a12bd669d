"""Starting the real ``converge-ledger`` binary for tests, the way a user runs it."""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import threading
from typing import IO

REPO = pathlib.Path(__file__).resolve().parents[3]


def binary() -> str:
    """``CONVERGE_LEDGER_BIN``, else the newer of this repo's release and debug builds."""
    if os.environ.get("CONVERGE_LEDGER_BIN"):
        return os.environ["CONVERGE_LEDGER_BIN"]
    built = [REPO / "target" / p / "converge-ledger" for p in ("release", "debug")]
    built = [p for p in built if p.exists()]
    if built:
        return str(max(built, key=lambda p: p.stat().st_mtime))
    raise RuntimeError("no converge-ledger binary: run `cargo build --release` or set CONVERGE_LEDGER_BIN")


class Node:
    """A ``converge-ledger serve`` process; ``url`` once it listens."""

    def __init__(self, data_dir: pathlib.Path | None, *extra: str, listen: str = "127.0.0.1:0") -> None:
        storage = ["--data-dir", str(data_dir)] if data_dir else ["--storage", "memory"]
        self.args = ["serve", "--listen", listen, "--http", "127.0.0.1:0", *storage, *extra]
        self.data_dir, self.extra = data_dir, extra
        self.log: list[str] = []
        env = {k: v for k, v in os.environ.items() if k != "GRPC_PORT"}
        self.process = subprocess.Popen(
            [binary(), *self.args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        threading.Thread(target=self._drain, args=(self.process.stderr,), daemon=True).start()
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line.startswith("listening on "):
            self.process.kill()
            raise RuntimeError(f"the node did not start: {line!r}\n" + "\n".join(self.log))
        self.address = line.removeprefix("listening on ").strip()
        self.url = f"http://{self.address}"
        threading.Thread(target=self._drain, args=(self.process.stdout,), daemon=True).start()

    def _drain(self, stream: IO[str] | None) -> None:
        assert stream is not None
        for line in stream:
            self.log.append(line.rstrip())

    def terminate(self) -> int:
        """SIGTERM, and waits for a clean stop."""
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=30)

    def restart(self) -> Node:
        """The same node again, on the same address and data directory."""
        return Node(self.data_dir, *self.extra, listen=self.address)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def cli(*args: str) -> str:
    """Runs a client subcommand of the binary; its stdout."""
    return subprocess.run([binary(), *args], check=True, capture_output=True, text=True).stdout
