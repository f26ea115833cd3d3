"""free_port never hands out a port twice, even when the kernel offers the same one again."""

from __future__ import annotations

from typing import Any

import pytest

from shared.cluster import natsd


class _Sock:
    offers = [41001, 41001, 41002]

    def __enter__(self) -> _Sock:
        return self

    def __exit__(self, *exc: Any) -> None:
        pass

    def bind(self, addr: tuple[str, int]) -> None:
        self.port = _Sock.offers.pop(0)

    def getsockname(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)


def test_a_port_offered_twice_is_handed_out_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(natsd, "_GIVEN", set())
    monkeypatch.setattr(natsd.socket, "socket", lambda *a: _Sock())
    assert [natsd.free_port(), natsd.free_port()] == [41001, 41002]
