from __future__ import annotations

import pathlib
import sys
from collections.abc import Iterator

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).parent))

from ledger_node import Node  # noqa: E402


@pytest.fixture
def node() -> Iterator[Node]:
    """A node in memory."""
    n = Node(None)
    yield n
    n.stop()


@pytest.fixture
def disk_node(tmp_path: pathlib.Path) -> Iterator[Node]:
    """A node on disk, in a fresh directory."""
    n = Node(tmp_path / "data")
    yield n
    n.stop()
