"""The connection registry's choices: who makes room for a new connection, and when one is refused."""

import logging

import pytest

from recommender.local.connections import FD_RESERVE, MIN_CONNECTIONS, Registry, Tally, connection_limit


class Conn:
    def __init__(self, address: str) -> None:
        self.address = address
        self.closed = False

    def make_room(self) -> None:
        self.closed = True


@pytest.fixture
def registry():
    return Registry(limit=4, per_address=2, tally=Tally(logging.getLogger("test"), lambda _d, _f: None))


def test_an_address_at_its_share_makes_room_from_its_own_slowest(registry):
    a1, a2, b1 = Conn("a"), Conn("a"), Conn("b")
    for conn in (a1, a2, b1):
        assert registry.admit(conn) is None
    registry.waiting(a1)  # a1 sent a byte since: a2 has waited longest
    a3 = Conn("a")
    assert registry.admit(a3) is None
    assert (a1.closed, a2.closed, b1.closed) == (False, True, False)
    assert len(registry) == 3


def test_waiting_requests_make_room_before_idle_keep_alive_ones_and_answering_ones_never(registry):
    idle, busy, slow = Conn("a"), Conn("b"), Conn("c")
    for conn in (idle, busy, slow):
        registry.admit(conn)
    registry.answering(idle)
    registry.answered(idle)  # served, now idle between requests
    registry.answering(busy)  # its request is being answered
    d, e = Conn("d"), Conn("e")
    registry.admit(d)  # at the limit of 4 now
    registry.admit(e)
    assert (slow.closed, idle.closed, busy.closed) == (True, False, False)
    registry.answering(d)
    registry.answering(e)
    registry.admit(Conn("f"))
    assert idle.closed and not busy.closed  # then the idle one
    full = Registry(limit=1, per_address=1, tally=registry.tally)
    answering = Conn("a")
    full.admit(answering)
    full.answering(answering)
    assert full.admit(Conn("a")) == "too many open connections from this address (the limit is 1)"
    assert full.admit(Conn("b")) == "the server is at its limit of 1 open connections"
    assert not answering.closed


def test_removed_connections_free_their_slots(registry):
    conns = [Conn("a"), Conn("a")]
    for conn in conns:
        registry.admit(conn)
    registry.remove(conns[0])
    registry.remove(conns[0])  # twice (closed to make room, then lost) counts once
    assert registry.admit(Conn("a")) is None and not conns[1].closed
    assert len(registry) == 2


def test_the_connection_limit_leaves_file_descriptors_for_the_process():
    assert connection_limit(1000, 1024) == 1024 - FD_RESERVE
    assert connection_limit(1000, 1_048_576) == 1000
    assert connection_limit(1000, 100) == MIN_CONNECTIONS


def test_the_tally_logs_the_first_at_once_then_one_line_per_period(caplog):
    scheduled = []
    tally = Tally(logging.getLogger("test.tally"), lambda delay, flush: scheduled.append((delay, flush)))
    with caplog.at_level(logging.WARNING, logger="test.tally"):
        for _ in range(50):
            tally.count("new connections refused (503)", "10.0.0.1")
        assert len(caplog.records) == 1 and len(scheduled) == 1
        scheduled[0][1]()
    assert len(caplog.records) == 2
    assert caplog.records[1].getMessage() == ("connection limits: 49 new connections refused (503); from 10.0.0.1 (49)")


class FakeTransport:
    """What the protocol asks of an asyncio transport, recording how it was closed."""

    def __init__(self) -> None:
        self.closed = self.aborted = False
        self.written = b""

    def get_extra_info(self, name: str):
        return {"peername": ("10.0.0.9", 5555), "sockname": ("127.0.0.1", 8090)}.get(name)

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def write(self, data: bytes) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...


def test_an_answer_the_client_stops_reading_is_cut_off_after_the_body_time_limit():
    import asyncio
    from dataclasses import replace

    from uvicorn.config import Config
    from uvicorn.server import ServerState

    from recommender.core.settings import Settings
    from recommender.local.protocol import Limits, limited_protocol

    loop = asyncio.new_event_loop()
    try:
        protocol_class = limited_protocol(Limits.of(replace(Settings(), body_timeout_seconds=0.05)))
        config = Config(app=lambda *_a: None, log_level="warning")
        reading, stalled = FakeTransport(), FakeTransport()
        for transport in (reading, stalled):
            protocol = protocol_class(config, ServerState(), {}, _loop=loop)
            protocol.connection_made(transport)
            protocol.pause_writing()  # the client's window is full
            if transport is reading:
                loop.run_until_complete(asyncio.sleep(0.02))
                protocol.resume_writing()  # it read in time
        loop.run_until_complete(asyncio.sleep(0.15))
    finally:
        loop.close()
    assert stalled.aborted and not reading.aborted


@pytest.mark.parametrize(
    "env",
    [
        {"BODY_TIMEOUT_SECONDS": "0"},
        {"MIN_BODY_BYTES_PER_SECOND": "-1"},
        {"MAX_CONNECTIONS": "0"},
        {"MAX_CONNECTIONS_PER_ADDRESS": "0"},
    ],
)
def test_limits_that_would_shut_every_client_out_are_refused_at_start(env):
    from recommender.core.errors import ConfigError
    from recommender.core.settings import settings_from_env

    with pytest.raises(ConfigError, match=next(iter(env))):
        settings_from_env(env)
