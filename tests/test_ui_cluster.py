"""The Cluster view (F10) and the KV cache panel's group lines, driven by a recorded real run over 2 ranks.

tests/data/cluster_events.json holds the events of the default model split over 2 local
ranks (tests/record_cluster_events.py); a single-process recording has no group, and
the view says so.
"""

import dataclasses
from pathlib import Path

import pytest
from test_ui import send
from ui_helpers import fake_app, text_of, wait_for

from chat.formatting import human_bytes, seconds
from chat.widgets.cluster_panel import timing_row
from chat.widgets.transcript import AssistantMessage
from model.distributed.info import PIPELINE, RankInfo
from model.runtime.events import ClusterStep

CLUSTER_EVENTS = Path(__file__).parent / "data" / "cluster_events.json"


async def one_turn(pilot, keys=("f10",)):
    app = pilot.app
    app.query_one("#prompt").cursor_blink = False
    await wait_for(pilot, lambda: app.chat.ready)
    for key in keys:
        await pilot.press(key)
    await send(pilot, "What is the capital of France?")
    await wait_for(pilot, lambda: not app.chat.busy and app.query(AssistantMessage))
    await pilot.pause(0.2)


@pytest.mark.asyncio
async def test_cluster_view_shows_the_ranks_and_the_last_timed_step():
    app, holder = fake_app(recording=CLUSTER_EVENTS)
    async with app.run_test(size=(140, 60)) as pilot:
        panel = app.chat.panels["cluster"]
        assert not panel.display  # closed until asked for
        await one_turn(pilot)
        steps = [e for e in holder["engine"].turns[0] if isinstance(e, ClusterStep)]
        last = steps[-1]
        shown = text_of(panel)
        assert panel.display and "2 ranks · tensor parallel · ring backend" in shown
        for r in last.cluster.per_rank:
            assert (
                f"{r.rank:<5}{r.host:<11}{r.heads:>6}{human_bytes(r.weight_bytes):>10}{human_bytes(r.kv_bytes):>10}"
                in shown
            )
        total = sum(r.kv_bytes for r in last.cluster.per_rank)
        [all_row] = [line for line in shown.splitlines() if line.strip("│ ").startswith("all ")]
        weights = sum(r.weight_bytes for r in last.cluster.per_rank)
        assert f"{human_bytes(weights):>10}{human_bytes(total):>10}" in all_row
        t = last.timing
        share = t.comm_s / (t.comm_s + t.compute_s)
        assert f" {share:.0%} comm" in shown
        assert timing_row("last", seconds(t.comm_s), seconds(t.compute_s), f"{t.collectives} msgs") in shown
        # The reply's mean, over every timed step the events carried (drawn or not).
        timed = list({s.timing.step: s.timing for s in steps}.values())
        comm = sum(s.comm_s for s in timed) / len(timed)
        compute = sum(s.compute_s for s in timed) / len(timed)
        assert timing_row("reply mean", seconds(comm), seconds(compute), f"{len(timed)} steps") in shown
        alone = timing_row("msgs alone", seconds(last.cluster.comm_s_per_step), "", "60 msgs")
        assert alone in shown and last.cluster.messages_per_step == 60  # 2 per layer, 30 layers
        # The KV cache panel: rank 0's share above, the group's total and each rank's below.
        cache = text_of(app.chat.panels["cache"])
        assert f"group {human_bytes(total)} on 2 ranks" in cache
        shares = "  ".join(f"{r.rank} {human_bytes(r.kv_bytes)}" for r in last.cluster.per_rank)
        assert f"rank {shares}" in cache


@pytest.mark.asyncio
async def test_pipeline_ranks_show_their_blocks():
    """Pipeline parallel: each rank runs a run of whole blocks, so the table names the blocks, not heads."""
    app, holder = fake_app(recording=CLUSTER_EVENTS)
    async with app.run_test(size=(140, 60)) as pilot:
        await wait_for(pilot, lambda: app.chat.ready)
        engine = holder["engine"]
        stages = (RankInfo(0, "mac-a.local", 1, 2, (0, 18), 9), RankInfo(1, "mac-b.local", 3, 4, (18, 30), 9))
        piped = [
            dataclasses.replace(e, cluster=dataclasses.replace(e.cluster, mode=PIPELINE, per_rank=stages))
            if isinstance(e, ClusterStep)
            else e
            for e in engine.turns[0]
        ]
        engine.turns[0] = piped
        await one_turn(pilot)
        shown = text_of(app.chat.panels["cluster"])
        assert "2 ranks · pipeline parallel" in shown and "blocks" in shown and "heads" not in shown
        assert "0    mac-a.local  0-17" in shown and "1    mac-b.local 18-29" in shown


@pytest.mark.asyncio
async def test_one_process_says_nothing_is_split():
    app, _ = fake_app()
    async with app.run_test(size=(140, 45)) as pilot:
        await one_turn(pilot)
        said = " ".join(line.strip("│ ") for line in text_of(app.chat.panels["cluster"]).splitlines())
        assert "One process: nothing is split. Start with --ranks 2 to split the model" in said
        assert "group" not in text_of(app.chat.panels["cache"])


def test_cluster_view_snapshot(snap_compare):
    """F10 after a recorded reply over 2 ranks (the prefill panel removed to make room)."""
    app, _ = fake_app(recording=CLUSTER_EVENTS)

    async def run(pilot):
        await pilot.app.query_one("#prefill").remove()
        await one_turn(pilot)

    assert snap_compare(app, terminal_size=(140, 45), run_before=run)
