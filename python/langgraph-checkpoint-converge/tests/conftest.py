from __future__ import annotations

import pathlib
import sys
from collections.abc import Iterator

import pytest

# The node helper is the client package's (one copy: starting the real binary).
sys.path.insert(0, str(pathlib.Path(__file__).parents[2] / "converge-ledger" / "tests"))

from ledger_node import Node  # noqa: E402


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    """A durable node for the module's tests (each test uses its own threads)."""
    n = Node(tmp_path_factory.mktemp("ledger"))
    yield n
    n.stop()
