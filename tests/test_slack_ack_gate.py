"""Work after an ack waits for the burst's acks, in arrival order, but never forever."""

from __future__ import annotations

import asyncio

from bot.app import AckGate


async def test_turns_come_in_arrival_order_after_the_burst():
    gate = AckGate(max_wait=5.0, settle=0.001)
    done: list[int] = []

    async def work(n: int) -> None:
        async with gate.turn():
            done.append(n)

    gate.enter()  # a request is being acknowledged
    tasks = [asyncio.create_task(work(n)) for n in range(5)]
    await asyncio.sleep(0.01)
    assert done == []  # nothing runs while an ack is in flight
    gate.leave()
    await asyncio.gather(*tasks)
    assert done == [0, 1, 2, 3, 4]


async def test_a_never_ending_stream_of_acks_does_not_starve_the_work():
    gate = AckGate(max_wait=0.05, settle=0.001)
    done: list[int] = []

    async def work(n: int) -> None:
        async with gate.turn():
            done.append(n)

    gate.enter()  # and never leaves
    await asyncio.wait_for(asyncio.gather(*(work(n) for n in range(20))), timeout=30)
    assert done == list(range(20))
