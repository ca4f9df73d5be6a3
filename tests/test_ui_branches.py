"""Branches in the app: regenerate, edit, fork at a token, switch with the arrows; over the fake engine's recorded
turns, and one edit on a real (tiny) engine."""

import pytest
from test_ui import send
from ui_helpers import fake_app, text_of, wait_for

from chat.app import GlasschatApp
from chat.recorder import ConversationRecorder
from chat.store import Store
from chat.widgets.confidence import ConfidenceText
from chat.widgets.prompt_input import PromptInput
from chat.widgets.reply_message import AssistantMessage
from chat.widgets.user_message import UserMessage
from model.loading.chat_template import Message, encode_conversation
from model.runtime.engine import Engine
from model.runtime.events import TurnEnded, TurnStarted
from model.runtime.requests import HoldRequest, ScoreRequest
from model.runtime.settings import EngineOptions

QUESTION = "What is the capital of France?"


async def first_turn(pilot):
    app = pilot.app
    await wait_for(pilot, lambda: app.chat.ready)
    await send(pilot, QUESTION)
    await wait_for(pilot, lambda: not app.chat.busy and app.query(AssistantMessage))


def shown(app):
    """The transcript as (role, text) pairs, in order."""
    return [
        ("user", w.text) if isinstance(w, UserMessage) else ("assistant", w.text)
        for w in app.chat.transcript.children
        if isinstance(w, (UserMessage, AssistantMessage))
    ]


@pytest.mark.asyncio
async def test_ctrl_r_regenerates_the_last_reply_in_place():
    app, holder = fake_app()
    async with app.run_test(size=(140, 45)) as pilot:
        await first_turn(pilot)
        tree = app.conversation.tree
        first = tree.turns[1].reply_text
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: not app.chat.busy and 2 in tree.turns)
        second = tree.turns[2]  # a second reply to the same message, from the same place
        assert (second.parent, second.user) == (0, QUESTION) and second.reply_text != first
        # One message, one reply: the new branch in place of the old.
        assert shown(app) == [("user", QUESTION), ("assistant", second.reply_text)]
        assert "‹ 2/2 ›" in text_of(app.query_one(UserMessage))


@pytest.mark.asyncio
async def test_regenerate_from_the_palette_and_nothing_to_regenerate():
    app, holder = fake_app()
    async with app.run_test(size=(140, 45)) as pilot:
        await wait_for(pilot, lambda: app.chat.ready)
        await app.chat.run_action("regenerate")  # nothing sent yet: a notice, nothing asked of the engine
        assert holder["engine"].requests == []
        await send(pilot, QUESTION)
        await wait_for(pilot, lambda: not app.chat.busy and app.query(AssistantMessage))
        entry = next(c for c in app.chat.commands() if c.title == "Regenerate")
        await entry.callback()
        tree = app.conversation.tree
        await wait_for(pilot, lambda: not app.chat.busy and 2 in tree.turns)
        assert (tree.turns[2].parent, tree.turns[2].user) == (0, QUESTION) and len(holder["engine"].requests) == 2


@pytest.mark.asyncio
async def test_arrows_switch_to_the_other_branch_and_back():
    app, holder = fake_app()
    async with app.run_test(size=(140, 45)) as pilot:
        await first_turn(pilot)
        engine, tree = holder["engine"], app.conversation.tree
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: not app.chat.busy and 2 in tree.turns)
        app.query_one(UserMessage).focus()
        await pilot.press("right")  # already the newest: nothing asked
        await pilot.press("left")
        await wait_for(pilot, lambda: not app.chat.busy and tree.current == 1)
        [hold] = engine.requests[2:]  # the cache asked to hold the other path: as the conversation renders it
        assert isinstance(hold, HoldRequest) and list(hold.ids) == app.conversation.path_ids(1)
        assert shown(app) == [("user", QUESTION), ("assistant", tree.turns[1].reply_text)]
        assert "‹ 1/2 ›" in text_of(app.query_one(UserMessage))
        # The prefill numbers of the switch, as the event gave them (the fake reads every id again).
        assert any(f"{len(hold.ids)} tokens prefilled, 0 reused" in str(n.render()) for n in app.query("Notice"))
        # A click on › goes back.
        message = app.query_one(UserMessage)
        arrow = text_of(message).splitlines()[-1].index("›")
        await pilot.click(UserMessage, offset=(arrow, message.outer_size.height - 1))
        await wait_for(pilot, lambda: not app.chat.busy and tree.current == 2)
        assert shown(app) == [("user", QUESTION), ("assistant", tree.turns[2].reply_text)]


@pytest.mark.asyncio
async def test_enter_on_a_top_k_candidate_forks_the_reply_there():
    app, holder = fake_app()
    async with app.run_test(size=(140, 45)) as pilot:
        await first_turn(pilot)
        tree = app.conversation.tree
        old = tree.turns[1]
        await pilot.press("f9")
        view = app.query_one(ConfidenceText)
        view.focus()
        await pilot.press("right", "right", "right")
        at = view.cursor
        step = view.steps[at]
        assert step.top_k[view.choice].id != step.token_id  # the pick starts on the runner-up
        await pilot.press("down")
        token = step.top_k[view.choice].id
        await pilot.press("enter")
        await wait_for(pilot, lambda: not app.chat.busy and 2 in tree.turns)
        new = tree.turns[2]
        assert (new.forked_at, new.token_forced) == (at, token)
        assert new.reply_ids[:at] == old.reply_ids[:at] and new.reply_ids[at] == token
        # The new branch is shown: its steps keep the old ones before the cut, then the forced token.
        reply = app.query_one(AssistantMessage)
        assert reply.turn_id == 2 and reply.text == new.reply_text
        forked = app.query_one(ConfidenceText)
        assert [s.token_id for s in forked.steps[: at + 1]] == list(new.reply_ids[: at + 1])
        assert forked.steps[:at] == view.steps[:at]
        assert forked.tinted.plain.startswith(
            "".join(s.text for s in view.steps[:at]) + next(t.text for t in step.top_k if t.id == token)
        )
        assert "‹ 2/2 ›" in text_of(app.query_one(UserMessage))


@pytest.mark.asyncio
async def test_branches_made_in_the_app_are_saved_as_a_tree(tmp_path):
    app, holder = fake_app()
    app.recorder = ConversationRecorder(Store(tmp_path / "g.db"), "fake", {})
    async with app.run_test(size=(140, 45)) as pilot:
        await first_turn(pilot)
        tree = app.conversation.tree
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: not app.chat.busy and 2 in tree.turns)
        await send(pilot, "And of Italy?")  # follows the regenerated reply
        await wait_for(pilot, lambda: not app.chat.busy and 3 in tree.turns)
        app.query(UserMessage).first().focus()
        await pilot.press("left")
        await wait_for(pilot, lambda: not app.chat.busy and tree.current == 1)
    store = Store(tmp_path / "g.db")
    [c] = store.conversations()
    msgs = {m.id: m for m in store.messages(c.id)}
    first, second, third = sorted((m for m in msgs.values() if m.role == "assistant"), key=lambda m: m.id)
    assert [r.content for r in (first, second, third)] == [tree.turns[n].reply_text for n in (1, 2, 3)]
    # Two questions from the system prompt, each with its reply; the follow-up under the regenerated one.
    assert msgs[first.parent_id].parent_id is None and msgs[second.parent_id].parent_id is None
    assert msgs[first.parent_id].content == msgs[second.parent_id].content == QUESTION
    assert msgs[third.parent_id].content == "And of Italy?" and msgs[third.parent_id].parent_id == second.id
    assert list(second.token_ids) == list(tree.turns[2].reply_ids)
    # The path shown when the app closed is the one opened next time.
    assert [m.id for m in store.path_to(c.id)][-1] == first.id


async def edit(pilot, message: UserMessage, text: str) -> None:
    """`e` on a message, the box's text replaced, Enter."""
    message.focus()
    await pilot.press("e")
    prompt = pilot.app.query_one(PromptInput)
    prompt.text = text
    await pilot.press("enter")


@pytest.mark.asyncio
async def test_e_edits_an_earlier_message_into_a_new_branch_and_esc_cancels():
    app, holder = fake_app()
    async with app.run_test(size=(140, 45)) as pilot:
        await first_turn(pilot)
        engine, tree = holder["engine"], app.conversation.tree
        await send(pilot, "And of Italy?")
        await wait_for(pilot, lambda: not app.chat.busy and 2 in tree.turns)
        old = shown(app)
        prompt = app.query_one(PromptInput)
        # The second message into the box, then Esc: nothing asked, the box as it was.
        app.query(UserMessage).last().focus()
        await pilot.press("e")
        assert prompt.text == "And of Italy?" and prompt.border_title == "editing message 2 · Esc cancels"
        await pilot.press("escape")
        assert prompt.text == "" and prompt.border_title == "Message" and app.chat.editing is None
        assert len(engine.requests) == 2
        # The first message, edited: a new branch from the system prompt.
        await edit(pilot, app.query(UserMessage).first(), "What is the capital of Spain?")
        await wait_for(pilot, lambda: not app.chat.busy and 3 in tree.turns)
        assert (tree.turns[3].parent, tree.turns[3].user) == (0, "What is the capital of Spain?")
        assert prompt.text == "" and prompt.border_title == "Message"
        assert shown(app) == [("user", "What is the capital of Spain?"), ("assistant", tree.turns[3].reply_text)]
        assert "‹ 2/2 ›" in text_of(app.query_one(UserMessage))
        # The old branch is untouched and one ← away, its follow-up included.
        app.query_one(UserMessage).focus()
        await pilot.press("left")
        await wait_for(pilot, lambda: not app.chat.busy and tree.current == 2)
        assert shown(app) == old
        # The palette's entry edits the last message shown; sending branches after the turn before it.
        app.query_one(PromptInput).focus()
        next(c for c in app.chat.commands() if c.title == "Edit message").callback()
        assert prompt.text == "And of Italy?" and prompt.border_title == "editing message 2 · Esc cancels"
        prompt.text = "And of Germany?"
        await pilot.press("enter")
        await wait_for(pilot, lambda: not app.chat.busy and 4 in tree.turns)
        assert (tree.turns[4].parent, tree.turns[4].user) == (1, "And of Germany?")
        assert [t for _, t in shown(app)][:3] == [QUESTION, tree.turns[1].reply_text, "And of Germany?"]


@pytest.mark.asyncio
async def test_an_edit_on_the_real_engine_prompts_a_fresh_rendering_of_its_path(tiny_chat_model):
    seen, engines = [], []

    def factory(options, emit):
        def tee(event):
            seen.append(event)
            emit(event)

        engines.append(Engine(options, tee))
        return engines[0]

    options = EngineOptions(model=tiny_chat_model, layout="float32", max_tokens=6)
    app = GlasschatApp(options, engine_factory=factory)
    users = ["First question?", "Second question?"]
    async with app.run_test(size=(140, 45)) as pilot:
        await wait_for(pilot, lambda: app.chat.ready, timeout=60)
        for n, user in enumerate(users, 1):
            await send(pilot, user)
            await wait_for(pilot, lambda n=n: not app.chat.busy and any(getattr(e, "turn_id", 0) == n for e in seen))
        service, tree = engines[0].core.service, app.conversation.tree
        old_history, old_turn = list(service.history), tree.get(2)
        await edit(pilot, app.query(UserMessage).last(), "Another second question?")
        await wait_for(
            pilot, lambda: not app.chat.busy and any(isinstance(e, TurnEnded) and e.turn_id == 3 for e in seen)
        )
        started = next(e for e in seen if isinstance(e, TurnStarted) and e.turn_id == 3)
        loaded = engines[0].core.loaded
        turn1 = tree.get(1)
        path = [Message("user", users[0]), Message("assistant", turn1.reply_text, turn1.reply_ids)]
        prompt, _ = encode_conversation(
            loaded.template, loaded.tokenizer, path + [Message("user", "Another second question?")], True
        )
        assert service.history[: len(prompt)] == prompt  # what the cache was given: the path, rendered afresh
        common = next(i for i, (a, b) in enumerate(zip(old_history, prompt)) if a != b)
        assert (tree.get(3).parent, started.reused_tokens, started.prompt_tokens) == (1, common, len(prompt) - common)
        assert tree.get(2) == old_turn and tree.siblings(3) == [2, 3]
        assert "‹ 2/2 ›" in text_of(app.query(UserMessage).last())


@pytest.mark.asyncio
async def test_a_reopened_conversation_branches_as_a_live_one(tmp_path):
    store = Store(tmp_path / "g.db")
    cid = store.new_conversation("fake", None, {})
    u1 = store.add_message(cid, "user", QUESTION, parent=None)
    r1 = store.add_reply(cid, "Paris.", [42, 30], "complete", {}, {}, parent=u1)
    u2 = store.add_message(cid, "user", QUESTION, parent=None)  # a regenerate, saved beside the first
    store.add_reply(cid, "It is Paris.", [43, 42, 30], "complete", {}, {}, parent=u2)
    u3 = store.add_message(cid, "user", "And of Italy?", parent=r1)
    store.add_reply(cid, "Rome", [77], "cancelled", {}, {}, parent=u3)  # the path shown: the last written
    app, holder = fake_app()
    app.recorder = ConversationRecorder(store, "fake", {})
    async with app.run_test(size=(140, 45)) as pilot:
        await first_turn(pilot)  # turn 1 of this session; the saved chat replaces it, keeping its own ids 1, 2, 3
        engine, conversation = holder["engine"], app.conversation
        await app.chat.open_saved(cid)
        await wait_for(pilot, lambda: not app.chat.busy)
        assert shown(app) == [
            ("user", QUESTION),
            ("assistant", "Paris."),
            ("user", "And of Italy?"),
            ("assistant", "Rome"),
        ]
        assert app.query(AssistantMessage).last().has_class("cancelled")
        assert "‹ 1/2 ›" in text_of(app.query(UserMessage).first())
        # Edit the saved follow-up: a branch after saved turn 1, numbered after the saved ones.
        tree = conversation.tree
        assert sorted(tree.turns) == [1, 2, 3] and tree.current == 3
        await edit(pilot, app.query(UserMessage).last(), "And of Spain?")
        await wait_for(pilot, lambda: not app.chat.busy and 4 in tree.turns)
        assert (tree.turns[4].parent, tree.turns[4].user) == (1, "And of Spain?")
        assert "‹ 2/2 ›" in text_of(app.query(UserMessage).last())
        # → on the first message: the other saved branch.
        app.query(UserMessage).first().focus()
        await pilot.press("right")
        await wait_for(pilot, lambda: not app.chat.busy and tree.current == 2)
        assert shown(app) == [("user", QUESTION), ("assistant", "It is Paris.")]
        # Regenerate it (Ctrl+R on its message), then fork the new reply at a token.
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: not app.chat.busy and 5 in tree.turns)
        assert "‹ 3/3 ›" in text_of(app.query_one(UserMessage))
        await pilot.press("f9")
        app.query_one(ConfidenceText).focus()
        await pilot.press("right", "enter")
        await wait_for(pilot, lambda: not app.chat.busy and 6 in tree.turns)
        fork = tree.turns[6]
        assert [type(r).__name__ for r in engine.requests[3:]] == ["HoldRequest", "TurnRequest", "TurnRequest"]
        assert fork.forked_at == 1 and fork.reply_ids[0] == tree.turns[5].reply_ids[0]
        assert "‹ 4/4 ›" in text_of(app.query_one(UserMessage))
    # Each new turn is saved in the reopened tree, under the message it follows.
    messages = Store(tmp_path / "g.db").messages(cid)
    by_id = {m.id: m for m in messages}
    spain = next(m for m in messages if m.content == "And of Spain?")
    assert spain.parent_id == r1
    new_replies = [m for m in messages if m.role == "assistant" and m.id > spain.id]
    assert [m.content for m in new_replies] == [tree.turns[n].reply_text for n in (4, 5, 6)]
    assert [by_id[m.parent_id].parent_id for m in new_replies] == [r1, None, None]
    assert (new_replies[2].forked_at, new_replies[2].token_forced) == (fork.forked_at, fork.token_forced)


@pytest.mark.asyncio
async def test_a_saved_reply_is_read_again_so_it_can_be_forked(tmp_path):
    store = Store(tmp_path / "g.db")
    cid = store.new_conversation("fake", None, {})
    u1 = store.add_message(cid, "user", QUESTION, parent=None)
    store.add_reply(cid, "Paris.", [42, 30], "complete", {}, {}, parent=u1)
    app, holder = fake_app()
    app.recorder = ConversationRecorder(store, "fake", {})
    async with app.run_test(size=(140, 45)) as pilot:
        await wait_for(pilot, lambda: app.chat.ready)
        engine = holder["engine"]
        await app.chat.open_saved(cid)
        await wait_for(pilot, lambda: not app.chat.busy)
        tree = app.conversation.tree  # the saved one's, as the conversation took it back
        await pilot.press("f9")  # the saved reply has no steps: the engine reads it again, then it is drawn
        await wait_for(pilot, lambda: app.query(ConfidenceText))
        [score] = [r for r in engine.requests if isinstance(r, ScoreRequest)]
        assert score.turn_id == 1 and score.reply == (42, 30)
        view = app.query_one(ConfidenceText)
        assert [s.token_id for s in view.steps] == [42, 30]
        view.focus()
        await pilot.press("right", "enter")  # the second token, forked to its runner-up
        await wait_for(pilot, lambda: not app.chat.busy and 2 in tree.turns)
        assert (tree.turns[2].forked_at, tree.turns[2].token_forced) == (1, 31)
        assert tree.turns[2].reply_ids[:2] == (42, 31) and "‹ 2/2 ›" in text_of(app.query_one(UserMessage))
    fork = Store(tmp_path / "g.db").messages(cid)[-1]
    assert (fork.role, fork.forked_at, fork.token_forced) == ("assistant", 1, 31)
