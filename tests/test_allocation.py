from hypothesis import given
from hypothesis import strategies as st

from kakarot_workers.allocation import plain_split

cas = st.lists(
    st.text(alphabet="0123456789abcdef", min_size=40, max_size=40).map(lambda h: "0x" + h),
    max_size=400,
    unique=True,
)


@given(cas, st.integers(1, 120), st.integers(1, 10_000))
def test_every_target_in_exactly_one_batch_and_no_batch_over_cap(targets, cap, task_id):
    batches = plain_split(task_id, targets, cap)
    flat = [ca for batch in batches for ca in batch]
    assert sorted(flat) == sorted(targets)
    assert all(1 <= len(batch) <= cap for batch in batches)


@given(cas, st.randoms())
def test_input_order_does_not_matter(targets, rnd):
    shuffled = list(targets)
    rnd.shuffle(shuffled)
    assert plain_split(1, targets, 99) == plain_split(1, shuffled, 99)


def test_batches_of_99_by_default_shape():
    targets = [f"0x{i:040x}" for i in range(200)]
    assert [len(b) for b in plain_split(1, targets, 99)] == [99, 99, 2]
