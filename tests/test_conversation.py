"""Conversations across turns on the real default model: reuse, cancel, long chats, long messages."""

import json

import mlx.core as mx
from cli_helpers import assert_one_line_error, glasschat
from engine_harness import SyncChat

from model.cache.kv_cache import KVCache
from model.cache.settings import CacheSettings
from model.runtime.generate import prefill

SYSTEM = "You are a terse assistant. Answer in one short sentence."


def cached_vs_fresh_logits(run, user_text):
    """Logits for the next turn from the live cache, and from a fresh prefill of the same history;
    and how the cache moved to the turn's prompt (what it reused, what it must read)."""
    service = run.service
    history = list(service.history)
    move = service.move(run.conversation.follow(user_text).ids, run.conversation.sink)
    cached = prefill(run.model, service.cache, move.to_feed)
    fresh_cache = KVCache(run.model.config, service.cache.capacity, run.model.rope.shift)
    fresh = prefill(run.model, fresh_cache, history + move.to_feed)
    return move, cached, fresh


def test_turn_three_reuses_the_cache_and_matches_a_fresh_prefill():
    # float32 pinned: with the CPU's default 4-bit weights, decode steps round their inputs to int16
    # (the SIMD kernel) while a prefill runs a float GEMM, ~5e-3 apart in logits; this checks the cache.
    run = SyncChat(max_tokens=20, system=SYSTEM, layout="float32")
    started1, _, ended1 = run.turn("What is the capital of France?")
    started2, _, _ = run.turn("And of Italy?")
    assert started2.reused_tokens == ended1.cache.tokens > started1.prompt_tokens
    assert started2.prompt_tokens <= 16  # only the new message and its markup
    history = len(run.service.history)
    move, cached, fresh = cached_vs_fresh_logits(run, "And of Spain?")
    assert run.cache.evicted_total == 0
    assert move.reused == history and not move.rolled_back
    assert mx.abs(cached - fresh).max().item() < 1e-3
    assert mx.argmax(cached).item() == mx.argmax(fresh).item()


def test_cancelled_turn_then_new_turn_matches_a_fresh_session():
    # float32 pinned: with the CPU's default 4-bit weights, decode steps round their inputs to int16
    # (the SIMD kernel) while a prefill runs a float GEMM, ~5e-3 apart in logits; this checks the cache.
    run = SyncChat(max_tokens=200, layout="float32")
    shown = []

    def cancel_after_six(event):
        shown.append(event)
        if len(shown) == 6:
            run.cancel()

    run.on_token = cancel_after_six
    _, tokens, ended = run.turn("Write a long story about a dragon.")
    run.on_token = None
    assert ended.stats.stop_reason == "cancelled"
    assert len(tokens) == 6 and ended.text == "".join(t.text for t in tokens)
    # The partial reply is kept as the user saw it, and the cache holds exactly it.
    reply = run.conversation.messages[-1]
    assert reply.role == "assistant" and list(reply.token_ids) == [t.token_id for t in tokens]
    assert run.cache.length == len(run.service.history)
    move, cached, fresh = cached_vs_fresh_logits(run, "Stop. What is 2+2?")
    # The cache holds the whole reply as shown (the step decoded after the cancel is dropped and
    # its token rolled back), so the next turn first closes it with the end-of-turn markup.
    tok = run.tokenizer()
    assert move.reused == len(run.service.history) and move.to_feed[0] == tok.token_id("<|im_end|>")
    assert mx.abs(cached - fresh).max().item() < 1e-3


def test_sixty_turns_in_a_small_cache():
    capacity = 256
    run = SyncChat(max_tokens=24, system=SYSTEM, cache=CacheSettings(max_kv_size=capacity))
    sink = None  # pinned when the first turn puts the system prompt in the cache
    first_turn_sink_keys = None
    bytes_after_eviction = set()
    topics = ["the sea", "a cat", "bread", "the moon", "rain", "a train", "music", "snow", "a garden", "chess"]
    for n in range(60):
        _, tokens, ended = run.turn(f"Tell me one fact about {topics[n % len(topics)]}.")
        assert ended.text.strip(), f"turn {n + 1} gave an empty reply"
        state = ended.cache
        assert state.tokens <= capacity
        assert state.position < run.model.config.max_position_embeddings
        assert all(t.cache.tokens <= capacity for t in tokens)
        if first_turn_sink_keys is None:
            sink = run.cache.keep
            assert sink > 4  # the system prompt, not just 4 tokens
            system_ids = run.service.history[:sink]
            first_turn_sink_keys = mx.array(run.cache.layers[0].keys[..., :sink, :])
        if state.evicted_total:
            bytes_after_eviction.add(state.bytes)
    assert run.cache.evicted_total > 5 * capacity
    assert len(bytes_after_eviction) == 1  # flat after the first eviction
    assert bytes_after_eviction == {run.cache.state().bytes_full}
    assert run.service.held_ids()[:sink] == system_ids
    assert mx.array_equal(run.cache.layers[0].keys[..., :sink, :], first_turn_sink_keys)


def test_message_longer_than_the_cache_is_rotated_and_answered():
    run = SyncChat(max_tokens=16, cache=CacheSettings(max_kv_size=128))
    long_message = "Here is some filler text about nothing in particular. " * 40 + "Now say hi."
    started, tokens, ended = run.turn(long_message)
    assert started.prompt_tokens > run.cache.capacity
    assert "larger --max-kv-size" in started.note
    assert ended.text.strip() and ended.stats.generated_tokens == len(tokens)
    assert run.cache.length <= run.cache.capacity and run.cache.evicted_total > 0
    run.turn("Thanks.")  # and the conversation goes on


def test_quantized_cache_matches_float_and_stays_flat(golden_greedy):
    q8 = SyncChat(max_tokens=8, cache=CacheSettings(kv_bits=8))
    for case in golden_greedy:
        q8.reset(None)
        _, _, ended = q8.turn(case["user"])
        assert list(ended.token_ids) == case["greedy_ids"][:8], case["user"]
    assert q8.cache.state().dtype.startswith("q8")

    rotating = SyncChat(max_tokens=24, cache=CacheSettings(kv_bits=8, max_kv_size=128))
    sizes = set()
    for n in range(8):
        _, _, ended = rotating.turn(f"Tell me about the number {n}.")
        if ended.cache.evicted_total:
            sizes.add(ended.cache.bytes)
    assert rotating.cache.evicted_total > 0 and len(sizes) == 1
    float_bytes = 128 * KVCache(rotating.model.config, 128, None).bytes_per_token()
    assert sizes.pop() < float_bytes / 3  # 8-bit plus scales vs float32


def test_keep_must_fit_the_cache():
    assert_one_line_error(glasschat("run", "hi", "--max-kv-size", "128", "--keep", "100"), "--keep 100")


def test_replay_json_per_turn(tmp_path):
    path = tmp_path / "chat.json"
    path.write_text(json.dumps(["Hi!", "What is 2+2?", "Thanks."]))
    proc = glasschat("replay", str(path), "--json", "--max-tokens", "12", "--max-kv-size", "64")
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["turn"] for r in rows] == [1, 2, 3] and rows[1]["user"] == "What is 2+2?"
    for key in (
        "text",
        "token_ids",
        "prompt_tokens",
        "reused_tokens",
        "prefill_s",
        "decode_tok_s",
        "generated_tokens",
        "stop_reason",
        "cache",
    ):
        assert key in rows[0]
    for key in ("tokens", "capacity", "bytes", "sink_tokens", "evicted_total", "position"):
        assert key in rows[0]["cache"]
    assert rows[1]["reused_tokens"] > 0 and rows[2]["cache"]["capacity"] == 64
    assert rows[2]["cache"]["evicted_total"] > 0


def test_replay_rejects_invalid_utf8(tmp_path):
    path = tmp_path / "bad.json"
    path.write_bytes(b'["caf\xe9"]')
    assert_one_line_error(glasschat("replay", str(path)), "not valid UTF-8")
