"""Our model against mlx-lm's reference outputs for the default model."""

import mlx.core as mx

from model.loading.chat_template import Message, encode_conversation
from model.loading.loader import load_model

TOLERANCE = 0.05  # float32 vs 4-bit paths differ by up to about 0.04


def teacher_forced_logprobs(lm, prompt_ids, generated_ids):
    logits = lm.model(mx.array([prompt_ids + generated_ids]))[0]
    logprobs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
    return logprobs[len(prompt_ids) - 1 :]


def worst_logprob_error(lm, case):
    lp = teacher_forced_logprobs(lm, case["prompt_ids"], case["greedy_ids"])
    worst = 0.0
    for step, top5 in enumerate(case["top5_logprobs"]):
        for token, expected in top5:
            worst = max(worst, abs(lp[step, token].item() - expected))
    return worst


def test_prompt_ids_identical(default_model, golden_greedy):
    for case in golden_greedy:
        ids, _ = encode_conversation(
            default_model.template, default_model.tokenizer, [Message("user", case["user"])], add_generation_prompt=True
        )
        assert ids == case["prompt_ids"]
        assert default_model.template.render([Message("user", case["user"])], True) == case["prompt_text"]


def test_teacher_forced_logprobs_float32(default_model, golden_greedy):
    for case in golden_greedy:
        assert worst_logprob_error(default_model, case) < TOLERANCE, case["user"]


def test_teacher_forced_logprobs_quantized(golden_greedy):
    lm = load_model(None, layout="quantized")
    assert "q4" in lm.info()["weight_dtype"]
    for case in golden_greedy[:2]:  # CPU quantized matmul is slow; two prompts suffice
        assert worst_logprob_error(lm, case) < TOLERANCE, case["user"]


def test_greedy_tokens_through_the_engine(golden_greedy):
    from model.runtime.engine import EngineOptions
    from model.runtime.headless import HeadlessSession

    session = HeadlessSession(EngineOptions(max_tokens=16))
    try:
        for case in golden_greedy:
            session.engine.reset()
            result = session.turn(case["user"])
            assert result.started.prompt_tokens == len(case["prompt_ids"])
            assert list(result.ended.token_ids) == case["greedy_ids"][:16], case["user"]
    finally:
        session.close()
