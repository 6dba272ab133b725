import pytest
from hypothesis import given, settings, strategies as st

from course_lib.padding import (attention_mask_from_lengths, batches_in_order, bucket_by_length, pad_batch,
                                pad_tokens, padding_stats, position_ids_from_mask, total_waste)


def test_seed_exercise_right_padding():
    seqs = [["The", "cat", "sat"], ["A", "quick", "brown", "fox"], ["On", "the", "mat"]]
    assert pad_tokens(seqs) == [["The", "cat", "sat", "<pad>"], ["A", "quick", "brown", "fox"], ["On", "the", "mat", "<pad>"]]


def test_left_padding_mask_and_positions():
    b = pad_batch([[7, 8, 9], [5]], side="left")
    assert b.input_ids.tolist() == [[7, 8, 9], [256, 256, 5]]
    assert b.attention_mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert b.position_ids.tolist() == [[0, 1, 2], [0, 0, 0]]
    r = pad_batch([[7, 8, 9], [5]], side="right")
    assert r.position_ids.tolist() == [[0, 1, 2], [0, 0, 0]] and r.attention_mask.tolist() == [[1, 1, 1], [1, 0, 0]]


@pytest.mark.parametrize("bad,match", [([], "seqs"), ([[1], []], r"seqs\[1\]")])
def test_pad_batch_rejects_empty(bad, match):
    with pytest.raises(ValueError, match=match):
        pad_batch(bad)


def test_bad_side_and_length():
    with pytest.raises(ValueError, match="side"):
        pad_tokens([[1]], side="middle")
    with pytest.raises(ValueError, match="length"):
        pad_tokens([[1, 2, 3]], length=2)


@given(st.lists(st.integers(0, 50), min_size=1, max_size=12), st.sampled_from(["left", "right"]))
def test_mask_counts_and_positions(lengths, side):
    m = attention_mask_from_lengths(lengths, side)
    assert m.sum(1).tolist() == lengths
    pos = position_ids_from_mask(m)
    for row, n in zip(pos.tolist(), lengths):
        real = [p for p, keep in zip(row, m[lengths.index(n)].tolist()) if keep] if n else []
        assert sorted(real) == list(range(n))


def test_padding_stats_numbers():
    s = padding_stats([3, 4, 3])
    assert (s.padded_slots, s.real_tokens, s.pad_tokens) == (12, 10, 2)
    assert s.token_waste == pytest.approx(2 / 12)
    assert s.attn_pairs_padded == 3 * 10 and s.attn_pairs_real == 6 + 10 + 6
    assert padding_stats([]).token_waste == 0.0
    with pytest.raises(ValueError, match="lengths"):
        padding_stats([-1])


@settings(max_examples=300)
@given(st.lists(st.integers(1, 200), min_size=1, max_size=40), st.integers(1, 8))
def test_bucketing_never_wastes_more_than_arrival_order(lengths, batch_size):
    buckets = bucket_by_length(lengths, batch_size)
    assert sorted(i for b in buckets for i in b) == list(range(len(lengths)))
    assert total_waste(lengths, buckets) <= total_waste(lengths, batches_in_order(lengths, batch_size)) + 1e-12


def test_bucketing_example_and_bad_batch_size():
    assert bucket_by_length([5, 100, 6, 98], 2) == [[0, 2], [3, 1]]
    assert bucket_by_length([2, 2, 1], 2) == [[2], [0, 1]]   # the smaller batch takes the short one
    assert bucket_by_length([1, 1, 2], 2) == [[0, 1], [2]]   # ... or the long one
    assert bucket_by_length([], 3) == []
    with pytest.raises(ValueError, match="batch_size"):
        bucket_by_length([1], 0)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(1, 9), min_size=1, max_size=6), st.integers(1, 4))
def test_bucketing_is_optimal_against_brute_force(lengths, batch_size):
    """No way of splitting into batches of these sizes pads less (checked over every permutation)."""
    import itertools
    n = len(lengths)
    sizes = [batch_size] * (n // batch_size) + ([n % batch_size] if n % batch_size else [])
    best = min(
        total_waste(lengths, [list(perm[sum(sizes[:i]):sum(sizes[:i + 1])]) for i in range(len(sizes))])
        for perm in itertools.permutations(range(n)))
    assert total_waste(lengths, bucket_by_length(lengths, batch_size)) <= best + 1e-12
