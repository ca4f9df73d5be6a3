"""Sampling functions on hand-made logits."""

import math

import mlx.core as mx

from model.network.fast_math import log_softmax
from model.runtime.sampling import (
    SamplingSettings,
    apply_repetition_penalty,
    draw,
    filter_min_p,
    filter_top_k,
    filter_top_p,
    sampling_distribution,
    top_k_of,
)

LOGITS = mx.array([2.0, 1.0, 0.5, 3.0, -1.0, 0.0])


def kept(logprobs):
    return sorted(i for i, v in enumerate(logprobs.tolist()) if v != -math.inf)


def test_greedy_is_argmax():
    lp = sampling_distribution(LOGITS, SamplingSettings(), mx.array([], mx.int32))
    assert draw(lp, SamplingSettings(), None).item() == 3


def test_top_k_keeps_k():
    assert kept(filter_top_k(log_softmax(LOGITS), 2)) == [0, 3]


def test_top_p_keeps_smallest_set_reaching_p():
    lp = log_softmax(LOGITS)
    probs = sorted(mx.exp(lp).tolist(), reverse=True)
    assert probs[0] < 0.7 < probs[0] + probs[1]
    assert kept(filter_top_p(lp, 0.7)) == [0, 3]
    assert kept(filter_top_p(lp, 0.01)) == [3]


def test_min_p_is_relative_to_the_top():
    lp = log_softmax(LOGITS)
    # exp(2-3) = 0.37 survives a 0.3 cut; exp(1-3) = 0.14 does not.
    assert kept(filter_min_p(lp, 0.3)) == [0, 3]


def test_repetition_penalty_pushes_seen_tokens_down():
    out = apply_repetition_penalty(mx.array(LOGITS), mx.array([3, 4]), 2.0)
    assert out[3].item() == 1.5 and out[4].item() == -2.0 and out[0].item() == 2.0


def test_distribution_is_normalised_and_filtered():
    s = SamplingSettings(temperature=0.7, top_k=3)
    lp = sampling_distribution(LOGITS, s, mx.array([], mx.int32))
    assert abs(mx.exp(lp).sum().item() - 1.0) < 1e-5
    assert kept(lp) == [0, 1, 3]


def test_seed_makes_draws_reproducible():
    s = SamplingSettings(temperature=1.0)
    lp = sampling_distribution(LOGITS, s, mx.array([], mx.int32))
    a = [draw(lp, s, k).item() for k in mx.random.split(mx.random.key(7), 20)]
    b = [draw(lp, s, k).item() for k in mx.random.split(mx.random.key(7), 20)]
    assert a == b and len(set(a)) > 1


def test_top_k_of_is_sorted_best_first():
    ids, probs = top_k_of(log_softmax(LOGITS), 4)
    assert ids.tolist() == [3, 0, 1, 2]
    assert probs.tolist() == sorted(probs.tolist(), reverse=True)
