"""Branches: fork a reply at a token, regenerate, edit an earlier message, switch paths.

On a tiny random model that speaks the default model's vocabulary and chat
template (fast; replies are gibberish, but exact). The references are
independent of the cache: greedy continuations recomputed over the whole
sequence without one, and caches filled by one fresh prefill of the path.
The rollbacks (a fork, and forks after evictions) run on both code paths
(tests/code_paths.py) with the same bounds: float32 on each.
"""

import mlx.core as mx
import pytest
from engine_harness import SyncChat

from model.cache.kv_cache import KVCache
from model.cache.settings import CacheSettings
from model.loading.chat_template import Message, encode_conversation
from model.runtime.events import CacheHeld, ReplyScored, TokenGenerated, TurnEnded, TurnFailed, TurnStarted
from model.runtime.generate import prefill
from model.runtime.settings import SamplingSettings

REPLY = 10


@pytest.fixture
def run(tiny_chat_model):
    return SyncChat(model=tiny_chat_model, layout="float32", max_tokens=REPLY)


def request(run, method, *args):
    """Run one branch request; returns (TurnStarted, TurnEnded), or the CacheHeld of a switch."""
    start = len(run.events)
    getattr(run, method)(*args)
    new = run.events[start:]
    failed = [e for e in new if isinstance(e, TurnFailed)]
    assert not failed, failed[0].message
    switched = [e for e in new if isinstance(e, CacheHeld)]
    if switched:
        return switched[0]
    return next(e for e in new if isinstance(e, TurnStarted)), next(e for e in new if isinstance(e, TurnEnded))


def greedy_uncached(model, ids, n):
    """`n` greedy tokens after `ids`, each from a full forward pass over everything so far (no cache)."""
    ids = list(ids)
    out = []
    for _ in range(n):
        token = mx.argmax(model(mx.array([ids]))[0, -1]).item()
        out.append(token)
        ids.append(token)
    return out


def fresh_render(run, messages, generation_prompt=True):
    loaded = run.loaded
    ids, _ = encode_conversation(loaded.template, loaded.tokenizer, messages, add_generation_prompt=generation_prompt)
    return ids


def assert_cache_is_a_fresh_prefill(run):
    """The live cache holds the same tokens, keys and values as one prefill of its history into a new cache."""
    service = run.service
    assert service.cache.evicted_total == 0 and service.cache.length == len(service.history)
    fresh = KVCache(run.model.config, service.cache.capacity, run.model.rope.shift, keep=service.cache.keep)
    mx.eval(prefill(run.model, fresh, service.history))
    assert fresh.length == service.cache.length
    for live, ref in zip(service.cache.layers, fresh.layers):
        for a, b in zip(live.stored(service.cache.length), ref.stored(fresh.length)):
            assert mx.abs(a - b).max().item() < 1e-4


def test_fork_keeps_the_start_forces_the_token_and_continues_as_a_fresh_engine(code_path, run):
    _, first = request(run, "send", "What is the capital of France?")
    original = list(first.reply_ids)
    assert len(original) == REPLY  # random weights never pick the end-of-turn token here
    at, token = 4, (original[4] + 1) % 1000
    held = run.cache.length
    started, ended = request(run, "fork", 1, at, token)
    reply = list(ended.token_ids)
    assert reply[:at] == original[:at] and reply[at] == token
    prompt = fresh_render(run, [Message("user", "What is the capital of France?")])
    assert greedy_uncached(run.model, prompt + reply[: at + 1], REPLY) == reply[at + 1 :]
    # Only the forced token was fed: the cache was rolled back to the fork point, not refilled.
    assert started.prompt_tokens == 1 and started.reused_tokens == len(prompt) + at < held
    fork = run.conversation.tree.get(ended.turn_id)
    assert (fork.forked_at, fork.token_forced, fork.parent) == (at, token, 0)
    assert run.conversation.tree.path() == [2] and not started.rebuilt
    assert run.service.history == prompt + reply[:-1]
    assert_cache_is_a_fresh_prefill(run)
    # The original reply is still there, beside the fork.
    tree = run.conversation.tree
    assert list(tree.get(1).reply_ids) == original and tree.siblings(2) == [1, 2]


def test_greedy_regenerate_gives_the_same_reply(run):
    _, first = request(run, "send", "Tell me a joke.")
    started, again = request(run, "regenerate", 1)
    assert again.token_ids == first.token_ids and run.conversation.tree.path() == [2]
    assert started.prompt_tokens == 1  # the prompt is held; only its last token is fed for the logits
    assert_cache_is_a_fresh_prefill(run)


def test_seeded_regenerate_is_reproducible(tiny_chat_model):
    replies = []
    for _ in range(2):
        sampling = SamplingSettings(temperature=1.0, seed=7)
        run = SyncChat(model=tiny_chat_model, layout="float32", max_tokens=REPLY, sampling=sampling)
        request(run, "send", "Tell me a joke.")
        replies.append([request(run, "regenerate", 1)[1].token_ids for _ in range(2)])
    assert replies[0] == replies[1]  # the same seed, the same draws
    assert replies[0][0] != replies[0][1]  # each regenerate draws anew


def test_editing_an_earlier_message_branches_and_keeps_the_old_path(run):
    users = ["First question?", "Second question?", "Third question?"]
    for user in users:
        request(run, "send", user)
    old_messages = list(run.conversation.messages)
    old_history = list(run.service.history)
    started, ended = request(run, "edit", 1, "Another second question?")
    turn1 = run.conversation.tree.get(1)
    path = [Message("user", users[0]), Message("assistant", turn1.reply_text, turn1.reply_ids)]
    prompt = fresh_render(run, path + [Message("user", "Another second question?")])
    assert run.service.history[: len(prompt)] == prompt
    common = next(i for i, (a, b) in enumerate(zip(old_history, prompt)) if a != b)
    assert started.reused_tokens == common and started.prompt_tokens == len(prompt) - common
    assert run.conversation.tree.path() == [1, 4] and run.conversation.tree.get(4).parent == 1
    assert_cache_is_a_fresh_prefill(run)
    # The old branch is untouched, and switching back restores its cache.
    switched = request(run, "switch_branch", 3)
    assert run.conversation.tree.path() == [1, 2, 3] and run.conversation.messages == old_messages
    whole = fresh_render(run, old_messages, generation_prompt=False)
    assert switched.reused_tokens == common and switched.prompt_tokens == len(whole) - common
    assert run.service.history == whole
    assert_cache_is_a_fresh_prefill(run)


def test_fork_after_its_point_was_evicted_rebuilds_from_the_sink(code_path, tiny_chat_model):
    run = SyncChat(model=tiny_chat_model, layout="float32", max_tokens=REPLY, cache=CacheSettings(64))
    request(run, "send", "What is the capital of France?")
    request(run, "send", "And the capital of Spain, and of Italy?")
    request(run, "send", "Thanks!")
    keep = run.cache.keep
    assert run.cache.evicted_total > 0
    run.score(3)  # a reply further into the chat than the cache holds is not read again: one line
    assert "past the cache's 64" in run.events[-1].message and isinstance(run.events[-1], TurnFailed)
    first = run.conversation.tree.get(1)
    started, ended = request(run, "fork", 1, 3, 42)
    prompt = fresh_render(run, [Message("user", "What is the capital of France?")])
    target = prompt + list(first.reply_ids[:3]) + [42]
    assert started.rebuilt and "evicted" in started.note
    assert started.reused_tokens == keep and started.prompt_tokens == len(target) - keep
    assert list(ended.token_ids[:4]) == list(first.reply_ids[:3]) + [42]
    assert greedy_uncached(run.model, target, REPLY) == list(ended.token_ids[4:])
    assert run.conversation.tree.path() == [4]
    assert_cache_is_a_fresh_prefill(run)
    # Back to the long path: the fork's cache still holds their common start (the prompt and 3 reply
    # tokens), so that is kept and only the rest is read, evicting as it goes.
    switched = request(run, "switch_branch", 3)
    whole = fresh_render(run, run.conversation.messages, generation_prompt=False)
    assert not switched.rebuilt and switched.reused_tokens == len(target) - 1
    assert run.service.history == whole and switched.prompt_tokens == len(whole) - switched.reused_tokens
    assert run.cache.evicted_total > 0 and run.cache.length == len(run.service.held_ids())
    # And to the fork again: now its point is gone, so it is rebuilt from the sink.
    switched = request(run, "switch_branch", 4)
    whole = fresh_render(run, run.conversation.messages, generation_prompt=False)
    assert switched.rebuilt and switched.reused_tokens == keep and switched.prompt_tokens == len(whole) - keep
    assert run.service.history == whole
    assert_cache_is_a_fresh_prefill(run)


def test_fork_while_its_point_is_still_held_after_an_eviction(code_path, tiny_chat_model):
    run = SyncChat(model=tiny_chat_model, layout="float32", max_tokens=REPLY, cache=CacheSettings(64))
    for user in ("What is the capital of France?", "And of Spain?", "And of Italy?"):
        _, last = request(run, "send", user)
    evicted = run.cache.evicted_total
    assert evicted > 0
    held = run.cache.length
    started, ended = request(run, "fork", 3, 6, 42)
    # The reply's tail is rolled back (the last token was never fed): only the forced token is read.
    assert not started.rebuilt and started.prompt_tokens == 1
    assert started.reused_tokens == held - (REPLY - 1 - 6)
    assert list(ended.token_ids[:7]) == list(last.reply_ids[:6]) + [42]
    fed = list(ended.token_ids[:-1])
    assert run.service.held_ids()[-len(fed) :] == fed


def test_bad_branch_requests_get_one_line(run):
    request(run, "send", "Hello")
    for method, args, words in (
        ("fork", (7, 0, 5), "no turn 7"),
        ("fork", (1, 99, 5), "fork at 0 to"),
        ("fork", (1, 0, 10**7), "not in this model's vocabulary"),
        ("regenerate", (3,), "no turn 3"),
        ("edit", (5, "hi"), "no turn 5"),
    ):
        start = len(run.events)
        getattr(run, method)(*args)
        [failed] = [e for e in run.events[start:] if isinstance(e, TurnFailed)]
        assert words in failed.message and "\n" not in failed.message
    assert run.conversation.tree.path() == [1]


def test_a_saved_tree_restored_switches_and_forks_as_the_live_one(run, tiny_chat_model):
    for user in ("First question?", "Second question?"):
        request(run, "send", user)
    request(run, "edit", 1, "Another second question?")
    saved = [run.conversation.tree.get(n) for n in (1, 2, 3)]  # 3 follows 1, beside 2
    other = SyncChat(model=tiny_chat_model, layout="float32", max_tokens=REPLY)
    request(other, "send", "Hello")  # a conversation under way: the saved one replaces it, ids and all
    other.restore(None, saved, 3)
    assert isinstance(other.events[-1], CacheHeld) and other.conversation.tree.path() == [1, 3]
    assert other.service.history == fresh_render(other, run.conversation.messages, generation_prompt=False)
    switched = request(other, "switch_branch", 2)
    first, second = saved[:2]
    path = [Message("user", first.user), Message("assistant", first.reply_text, first.reply_ids)]
    path += [Message("user", second.user), Message("assistant", second.reply_text, second.reply_ids)]
    assert other.conversation.tree.path() == [1, 2] and other.service.history == fresh_render(other, path, False)
    assert switched.reused_tokens > 0 and not switched.rebuilt
    assert_cache_is_a_fresh_prefill(other)
    # A saved reply read again has the steps it was written with: the same probabilities and top-k.
    other.score(2)
    [scored] = [e for e in other.events if isinstance(e, ReplyScored)]
    live = [e for e in run.events if isinstance(e, TokenGenerated) and e.turn_id == 2]
    assert [s[0] for s in scored.steps] == [e.token_id for e in live] == list(second.reply_ids)
    assert [s[2] for s in scored.steps] == pytest.approx([e.prob for e in live], abs=1e-4)
    assert [[t.id for t in s[3]] for s in scored.steps] == [[t.id for t in e.top_k] for e in live]
    assert "".join(s[1] for s in scored.steps) == second.reply_text
    started, ended = request(other, "fork", 2, 2, 42)
    # New turns are numbered after the saved ones, never over them.
    assert started.prompt_tokens == 1 and ended.turn_id == 4 and other.conversation.tree.path() == [1, 4]
    assert list(ended.token_ids[:3]) == list(second.reply_ids[:2]) + [42]
    prompt = fresh_render(other, path[:3])
    assert greedy_uncached(other.model, prompt + list(ended.token_ids[:3]), REPLY) == list(ended.token_ids[3:])
