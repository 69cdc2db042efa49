"""free_port: a port for a server that binds it later, out of reach of outgoing connections (no Ray)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from trainserve_workloads import lifecycle
from trainserve_workloads.lifecycle import FIRST_PICKED_PORT, LOOPBACK, free_port


def ephemeral_start() -> int:
    return int(Path(lifecycle.EPHEMERAL_RANGE_FILE).read_text().split()[0])


def test_ports_come_from_below_the_ephemeral_range_and_bind() -> None:
    ports = {free_port() for _ in range(20)}
    assert all(FIRST_PICKED_PORT <= port < ephemeral_start() for port in ports)
    for port in ports:
        with socket.socket() as server:
            server.bind((LOOPBACK, port))
            server.listen()


@pytest.fixture
def listening() -> Iterator[int]:
    with socket.socket() as server:
        server.bind((LOOPBACK, FIRST_PICKED_PORT + 7))
        server.listen()
        yield FIRST_PICKED_PORT + 7


def test_a_port_in_use_is_skipped(listening: int, monkeypatch: pytest.MonkeyPatch) -> None:
    picks = iter([listening, listening, FIRST_PICKED_PORT + 8])
    monkeypatch.setattr(lifecycle.random, "randrange", lambda start, stop: next(picks))
    assert free_port() == FIRST_PICKED_PORT + 8


def test_without_room_below_the_range_the_os_chooses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lifecycle, "_ephemeral_ports_start", lambda: FIRST_PICKED_PORT + 10)
    port = free_port()
    with socket.socket() as server:
        server.bind((LOOPBACK, port))
    assert port >= ephemeral_start()
