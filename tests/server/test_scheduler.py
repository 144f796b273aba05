"""The fair scheduler on its own: turns per owner weighted by work, priority first, truthful
positions, pauses, and FIFO for the one owner of a laptop server."""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest

from fluxnb.server.scheduler import FairScheduler, FifoScheduler, work_units


@dataclass(eq=False)
class Item:
    priority: int
    seq: int
    owner: str | None = None
    cost: float = 1.0


def _queue() -> FairScheduler[Item]:
    return FairScheduler(lambda item: item.cost)


def _drain(queue: FairScheduler[Item]) -> list[Item]:
    out = []
    while (item := queue.next()) is not None:
        out.append(item)
    return out


def _positions_match_dispatch(queue: FairScheduler[Item], items: list[Item]) -> None:
    queued = [i for i in items if i in set(queue)]
    before = {id(i): queue.position(i) for i in queued}
    order = _drain(queue)
    assert [before[id(i)] for i in order] == list(range(len(order)))


def test_a_quiet_student_waits_about_one_job_behind_a_flood() -> None:
    queue = _queue()
    flood = [Item(0, i, "flooder") for i in range(100)]
    for item in flood:
        queue.add(item)
    for _ in range(5):  # the flood has been running a while
        queue.next()
    quiet = Item(0, 100, "quiet")
    queue.add(quiet)
    assert queue.position(quiet) <= 1
    order = _drain(queue)
    assert order.index(quiet) <= 1
    assert FifoScheduler is FairScheduler  # the old name still imports


def test_owners_take_turns_and_bigger_jobs_wait_longer() -> None:
    queue = _queue()
    for i in range(6):
        queue.add(Item(0, i, "a"))
    for i in range(6, 12):
        queue.add(Item(0, i, "b"))
    big = Item(0, 12, "c", cost=4.0)
    queue.add(big)
    order = _drain(queue)
    assert [i.owner for i in order[:6]] == ["a", "b"] * 3
    assert 6 <= order.index(big) <= 9  # four turns' worth of work: after ~4 jobs of each


def test_positions_are_the_dispatch_order_with_owners_priorities_costs_and_removals() -> None:
    rng = random.Random(7)
    queue = _queue()
    items = [Item(rng.choice([0, 0, 0, 1]), i, rng.choice(["a", "b", "c", "d", None]),
                  cost=rng.choice([0.5, 1.0, 3.0])) for i in range(400)]
    for item in items[:300]:
        queue.add(item)
    for item in rng.sample(items[:300], 60):
        queue.remove(item)
        queue.remove(item)  # a second remove is a no-op
    for _ in range(50):
        queue.next()
    for item in items[300:]:
        queue.add(item)
    _positions_match_dispatch(queue, items)
    assert len(queue) == 0 and queue.next() is None and queue.position(items[0]) == 0


def test_normal_runs_before_low_priority_whoever_owns_it() -> None:
    queue = _queue()
    low = [Item(1, i, "a") for i in range(3)]
    normal = [Item(0, 3 + i, "b") for i in range(3)]
    for item in low + normal:
        queue.add(item)
    assert _drain(queue) == normal + low


def test_one_owner_is_plain_fifo_whatever_the_costs() -> None:
    rng = random.Random(3)
    queue = _queue()
    items = [Item(rng.choice([0, 1]), i, None, cost=rng.uniform(0.1, 9)) for i in range(200)]
    for item in items:
        queue.add(item)
    expected = sorted(items, key=lambda i: (i.priority, i.seq))
    assert list(queue) == expected
    assert [queue.position(i) for i in expected] == list(range(200))
    assert _drain(queue) == expected


def test_a_paused_owner_is_skipped_and_held_positions_come_after_the_runnable_ones() -> None:
    queue = _queue()
    bob = [Item(0, i, "bob") for i in range(4)]
    ada = [Item(0, 4 + i, "ada") for i in range(3)]
    for item in bob + ada:
        queue.add(item)
    queue.pause("bob")
    late = Item(0, 7, "bob")
    queue.add(late)  # a job added while paused is held too
    assert queue.paused() == {"queue": False, "owners": ["bob"]}
    before = {id(i): queue.position(i) for i in [*bob, late, *ada]}
    assert sorted(before.values()) == list(range(8))
    runnable = _drain(queue)
    assert runnable == ada and [before[id(i)] for i in runnable] == [0, 1, 2]
    queue.resume("bob")
    held = _drain(queue)
    assert held == [*bob, late] and [before[id(i)] for i in held] == [3, 4, 5, 6, 7]


def test_a_resumed_owner_takes_turns_from_now_on() -> None:
    queue = _queue()
    held = [Item(0, i, "bob") for i in range(5)]
    queue.pause("bob")
    for item in held:
        queue.add(item)
    others = [Item(0, 5 + i, "ada") for i in range(10)]
    for item in others:
        queue.add(item)
    for _ in range(6):
        queue.next()
    queue.resume("bob")
    order = _drain(queue)
    owners = [i.owner for i in order[:6]]  # alternating, not bob's five held jobs in a row
    assert owners in (["bob", "ada"] * 3, ["ada", "bob"] * 3)


def test_a_paused_queue_dispatches_nothing_and_keeps_its_positions() -> None:
    queue = _queue()
    items = [Item(0, i, o) for i, o in enumerate("abab")]
    for item in items:
        queue.add(item)
    queue.pause()
    before = [queue.position(i) for i in items]
    assert queue.next() is None and len(queue) == 4 and queue.paused()["queue"] is True
    queue.resume()
    assert [before[items.index(i)] for i in _drain(queue)] == [0, 1, 2, 3]


def test_work_units_are_megapixels_times_steps_times_images() -> None:
    assert work_units({}) == 28.0  # 1 MP, fal's default 28 steps, 1 image
    assert work_units({"image_size": {"width": 500, "height": 400}, "num_inference_steps": 10,
                       "num_images": 3}) == 6.0
    assert work_units({"num_inference_steps": 4}, (2000, 1000)) == 8.0
    assert work_units({"image_size": "nope", "num_images": True}) == 28.0


# -- least recent work first (issue 11, item 3: the idle credit) ------------------------------


def _two_floods_running(queue: FairScheduler[Item]) -> None:
    for i in range(20):
        queue.add(Item(0, i, "ab"[i % 2]))
    for _ in range(6):  # three turns each: both keep the queue full
        queue.next()


def test_a_person_with_no_recent_work_goes_before_the_floods_next_jobs() -> None:
    queue = _queue()
    _two_floods_running(queue)
    quiet = Item(0, 100, "quiet")
    queue.add(quiet)
    assert queue.position(quiet) == 0 and queue.next() is quiet
    again = Item(0, 101, "quiet")  # straight back: the credit is spent, it takes turns again
    queue.add(again)
    assert queue.position(again) == 2
    _positions_match_dispatch(queue, list(queue))

    plain = FairScheduler(lambda item: item.cost, idle_credit=0)  # the order before
    _two_floods_running(plain)
    late = Item(0, 100, "quiet")
    plain.add(late)
    assert plain.position(late) == 2  # tied with both floods' next jobs, and after them


def test_the_busy_owners_still_get_a_turn_in_every_round() -> None:
    queue = _queue()
    seq = iter(range(10**6))
    for _ in range(50):
        queue.add(Item(0, next(seq), "flood"))
    for k in range(10):
        queue.add(Item(0, next(seq), f"q{k}"))
    order = []
    for _ in range(300):  # everyone comes straight back: nobody is idle, so no credit
        item = queue.next()
        assert item is not None
        order.append(item.owner)
        queue.add(Item(0, next(seq), item.owner))
    turns = [i for i, owner in enumerate(order) if owner == "flood"]
    assert max(b - a for a, b in zip(turns, turns[1:], strict=False)) <= 11  # once per round of 11 owners
    assert 25 <= len(turns) <= 30  # one share of 11


def test_the_idle_credit_must_be_a_finite_number_at_least_zero() -> None:
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match=r"idle_credit must be a finite number >= 0"):
            FairScheduler(idle_credit=bad)
