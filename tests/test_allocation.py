"""Properties of the sticky allocator (hypothesis) and the churn figures the issue names."""

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kakarot_workers.control.allocation import (
    SLOTS,
    Allocation,
    AllocationParams,
    allocate,
    plain_split,
    ring_order,
    slot_of,
)

UNIVERSE = [f"0x{i:040x}" for i in range(400)]


def with_ids(allocation: Allocation, first_id: int = 1) -> dict[int, tuple[str, ...]]:
    """Give new batches positive ids, as the database would (existing ids are kept)."""
    next_id = max([first_id - 1, *(k for k in allocation.batches if k > 0)]) + 1
    result = {}
    for key, cas in allocation.batches.items():
        if key < 0:
            key, next_id = next_id, next_id + 1
        result[key] = cas
    return result


@st.composite
def scenarios(draw):
    cap = draw(st.integers(1, 25))
    params = AllocationParams(cap=cap, merge_below=draw(st.sampled_from([0.0, 0.3, 0.5, 0.9])))
    task_id = draw(st.integers(1, 50))
    current: dict[int, tuple[str, ...]] = {}
    for _ in range(draw(st.integers(0, 3))):  # a history of allocations
        targets = draw(st.sets(st.sampled_from(UNIVERSE), max_size=200))
        current = with_ids(allocate(task_id, current, targets, params))
    if draw(st.booleans()):  # sometimes the cap was lowered since
        params = AllocationParams(
            cap=max(1, cap - draw(st.integers(0, cap))), merge_below=params.merge_below
        )
    active = draw(st.sets(st.sampled_from(UNIVERSE), max_size=200))
    return task_id, current, active, params


@settings(max_examples=200, deadline=None)
@given(scenarios())
def test_every_target_in_exactly_one_batch_and_none_over_the_cap(scenario):
    task_id, current, active, params = scenario
    result = allocate(task_id, current, active, params)
    flat = [ca for cas in result.batches.values() for ca in cas]
    assert sorted(flat) == sorted(active)
    assert all(1 <= len(cas) <= params.cap for cas in result.batches.values())


@settings(max_examples=200, deadline=None)
@given(scenarios(), st.randoms())
def test_result_does_not_depend_on_input_order(scenario, rnd):
    task_id, current, active, params = scenario
    shuffled_active = list(active)
    rnd.shuffle(shuffled_active)
    keys = list(current)
    rnd.shuffle(keys)
    shuffled_current = {k: current[k] for k in keys}
    assert allocate(task_id, shuffled_current, shuffled_active, params) == allocate(
        task_id, current, active, params
    )


@settings(max_examples=200, deadline=None)
@given(scenarios())
def test_survivors_move_only_for_a_merge_or_a_split(scenario):
    task_id, current, active, params = scenario
    diff = allocate(task_id, current, active, params).diff
    for ca, (old, _new) in diff.moved.items():
        assert old in diff.merged or old in diff.split, ca


@settings(max_examples=200, deadline=None)
@given(scenarios())
def test_merges_only_below_the_threshold(scenario):
    task_id, current, active, params = scenario
    diff = allocate(task_id, current, active, params).diff
    for donor in diff.merged:
        survivors = [ca for ca in current[donor] if ca in active]
        assert len(survivors) < params.merge_below * params.cap


@settings(max_examples=200, deadline=None)
@given(scenarios())
def test_same_targets_again_change_nothing(scenario):
    task_id, current, active, params = scenario
    first = allocate(task_id, current, active, params)
    again = allocate(task_id, with_ids(first, first_id=1000), active, params)
    assert not again.diff.membership_changed
    assert not again.diff.moved and not again.diff.added and not again.diff.removed


@settings(max_examples=200, deadline=None)
@given(scenarios())
def test_diff_accounts_for_every_batch(scenario):
    task_id, current, active, params = scenario
    result = allocate(task_id, current, active, params)
    diff = result.diff
    assert diff.kept | diff.changed | diff.retired == set(current)
    assert not (diff.kept & diff.changed) and not (diff.changed & diff.retired)
    assert set(diff.new) == {k for k in result.batches if k < 0}
    for key in diff.kept:
        assert set(result.batches[key]) == set(current[key])
    assert diff.added == set(active) - {ca for cas in current.values() for ca in cas}


@settings(max_examples=100, deadline=None)
@given(
    st.sets(st.sampled_from(UNIVERSE), min_size=1, max_size=200),
    st.sets(st.sampled_from(UNIVERSE), max_size=100),
    st.integers(2, 30),
)
def test_pure_additions_move_nothing(base, extra, cap):
    params = AllocationParams(cap=cap)
    current = with_ids(allocate(7, {}, base, params))
    diff = allocate(7, current, base | extra, params).diff
    assert not diff.moved and not diff.retired


@settings(max_examples=100, deadline=None)
@given(st.sets(st.sampled_from(UNIVERSE), min_size=1, max_size=300), st.data())
def test_removals_without_merges_move_nothing(base, data):
    current = with_ids(allocate(7, {}, base, AllocationParams(cap=20)))
    gone = data.draw(st.sets(st.sampled_from(sorted(base))))
    diff = allocate(7, current, base - gone, AllocationParams(cap=20, merge_below=0)).diff
    assert not diff.moved and not diff.merged


def test_ring_order_and_slots():
    assert all(0 <= slot_of(1, ca) < SLOTS for ca in UNIVERSE)
    ordered = ring_order(1, UNIVERSE)
    slots = [slot_of(1, ca) for ca in ordered]
    assert slots == sorted(slots)
    assert len(set(slots)) > 150  # 400 CAs spread over the ring
    assert ring_order(2, UNIVERSE) != ordered  # the task id is part of the hash


def test_first_allocation_packs_batches_in_ring_order():
    cas = [f"0x{i:040x}" for i in range(200)]
    result = allocate(1, {}, cas)
    assert [len(b) for b in result.batches.values()] == [2, 99, 99]  # keys -3, -2, -1
    assert [list(result.batches[k]) for k in (-1, -2, -3)] == plain_split(1, cas, 99)


CHURN = [
    ("+100", 100, 0),
    ("-100", 0, 100),
    ("+1000", 1000, 0),
    ("-1000", 0, 1000),
    ("+3000", 3000, 0),
    ("10% replaced", 600, 600),
]


@pytest.mark.parametrize("name, add, remove", CHURN)
def test_churn_on_6000_targets(name, add, remove):
    rnd = random.Random(name)
    base = [f"0x{rnd.getrandbits(160):040x}" for _ in range(6000)]
    current = with_ids(allocate(1, {}, base))
    survivors = set(base) - set(rnd.sample(base, remove))
    new = {f"0x{rnd.getrandbits(160):040x}" for _ in range(add)}
    diff = allocate(1, current, survivors | new).diff
    assert not diff.moved  # none of these needs a merge at the default threshold
    if name == "+100":
        assert diff.touched <= 3
    if add and not remove:
        assert not diff.changed - {k for k in current if len(current[k]) < 99}


def test_merge_takes_the_fewest_moves():
    # batches of 99, 99 and 10; 95 of the second go away → 4 and 10 are both under 49.5
    full = [f"0x{i:040x}" for i in range(208)]
    current = with_ids(allocate(3, {}, full))
    sizes = {k: len(v) for k, v in current.items()}
    small = min(sizes, key=sizes.get)
    big = [k for k in sizes if k != small]
    gone = set(current[big[0]][:95])
    result = allocate(3, current, set(full) - gone)
    diff = result.diff
    assert len(diff.merged) == 1
    assert len(diff.moved) == 4  # the 4 survivors join the 10, not the other way round
    assert diff.touched == 2


def test_existing_keys_must_be_positive():
    with pytest.raises(ValueError):
        allocate(1, {-1: ("0x" + "a" * 40,)}, [])
