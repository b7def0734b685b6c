"""A StatsD listener on loopback, and the provider's metrics read out of its packets."""

from __future__ import annotations

import socket
import threading


class StatsdListener:
    """A UDP socket on loopback that keeps every StatsD packet it receives."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.packets: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    def _receive(self) -> None:
        while not self._stop.is_set():
            try:
                self.packets.extend(self.sock.recv(65535).decode().splitlines())
            except TimeoutError:
                continue

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


def kling_metrics(packets: list[str]) -> list[tuple[str, dict[str, str], str]]:
    """(name, tags, value) of the provider's metrics among the packets."""
    found = []
    for packet in packets:
        head, _, value = packet.partition(":")
        name, *tags = head.split(",")
        if name.startswith("airflow.kling."):
            found.append((name.removeprefix("airflow."), dict(t.split("=", 1) for t in tags), value))
    return found
