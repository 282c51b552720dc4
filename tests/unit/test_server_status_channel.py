"""`server.status_channel`: the first process asks each worker slot for its
counters over a private socket pair; replies come in chunks, a slot that
does not answer in time is None, and a late answer to an earlier request is
never taken for the answer to the next one. Both sides run on one loop here,
over real SOCK_SEQPACKET pairs."""

from __future__ import annotations

import asyncio
import os
import struct

from gssproxy_py.server.status_channel import (
    CHUNK,
    StatusChannels,
    StatusGatherer,
    answer_status_requests,
)


def test_every_slot_answers_in_chunks_and_a_silent_one_is_none() -> None:
    channels = StatusChannels.create(2)
    big = os.urandom(3 * CHUNK + 17)  # four messages

    async def run() -> list[tuple[int, bytes | None]]:
        gatherer = StatusGatherer(channels.first, 0.5)
        stop = answer_status_requests(channels.workers[0], lambda: big)
        try:
            return await gatherer.gather()  # slot 2 has no worker
        finally:
            stop()

    assert asyncio.run(run()) == [(1, big), (2, None)]


def test_a_late_answer_is_not_taken_for_the_next_one() -> None:
    channels = StatusChannels.create(1)
    answers = iter([b"first", b"second"])

    async def run() -> tuple[list[tuple[int, bytes | None]], list[tuple[int, bytes | None]]]:
        gatherer = StatusGatherer(channels.first, 0.3)
        missed = await gatherer.gather()  # no worker yet: the request waits
        stop = answer_status_requests(channels.workers[0], lambda: next(answers))
        try:
            # The worker answers the missed request ("first") and then this one.
            return missed, await gatherer.gather()
        finally:
            stop()

    missed, answered = asyncio.run(run())
    assert missed == [(1, None)]
    assert answered == [(1, b"second")]


def test_a_cut_reply_and_garbage_are_dropped() -> None:
    channels = StatusChannels.create(1)
    worker = channels.workers[0]
    header = struct.Struct("!IHH")

    async def run() -> list[tuple[int, bytes | None]]:
        gatherer = StatusGatherer(channels.first, 1.0)
        loop = asyncio.get_running_loop()
        task = loop.create_task(gatherer.gather())
        await asyncio.sleep(0.05)
        (number,) = struct.unpack("!I", worker.recv(64))
        worker.send(b"\x01")  # shorter than a header
        worker.send(header.pack(number, 0, 2) + b"cut")  # a reply cut after its first part
        worker.send(header.pack(number, 0, 2) + b"who")
        worker.send(header.pack(number + 1, 1, 2) + b"other")  # another request's
        worker.send(header.pack(number, 1, 2) + b"le")
        return await task

    assert asyncio.run(run()) == [(1, b"whole")]


def test_a_reset_channel_is_a_slot_that_did_not_answer() -> None:
    """The supervisor (which holds the workers' ends) gone with a request
    unread: the kernel resets the channel; STATUS still answers."""
    channels = StatusChannels.create(1)

    async def run() -> tuple[list[tuple[int, bytes | None]], list[tuple[int, bytes | None]]]:
        gatherer = StatusGatherer(channels.first, 0.2)
        unanswered = await gatherer.gather()  # the request stays unread
        channels.workers[0].close()
        return unanswered, await gatherer.gather()

    assert asyncio.run(run()) == ([(1, None)], [(1, None)])
