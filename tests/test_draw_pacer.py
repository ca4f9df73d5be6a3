"""The redraw pacer keeps the UI thread's CPU within its budget, between 2 and 5 redraws a second."""

from chat.draw_pacer import MAX_HZ, MIN_HZ, DrawPacer


class Clocks:
    def __init__(self):
        self.wall = 0.0
        self.cpu = 0.0


def run(pacer, clocks, cost_per_draw, draws=30):
    """Each redraw costs `cost_per_draw` seconds of UI CPU; the next comes after the pacer's interval."""
    for _ in range(draws):
        pacer.drew()
        clocks.cpu += cost_per_draw
        clocks.wall += pacer.interval
    return pacer.interval


def make(budget=0.06):
    clocks = Clocks()
    return DrawPacer(budget, cpu=lambda: clocks.cpu, wall=lambda: clocks.wall), clocks


def test_cheap_redraws_run_at_the_highest_rate():
    pacer, clocks = make()
    assert run(pacer, clocks, cost_per_draw=0.005) == 1 / MAX_HZ  # 2.5% of a core at 5 Hz


def test_costly_redraws_slow_down_until_within_budget():
    pacer, clocks = make()
    interval = run(pacer, clocks, cost_per_draw=0.018)  # 9% of a core at 5 Hz
    assert abs(0.018 / interval - 0.06) < 0.002  # settles where the UI uses its budget: 3.3 Hz


def test_never_slower_than_the_lowest_rate():
    pacer, clocks = make()
    assert run(pacer, clocks, cost_per_draw=0.2) == 1 / MIN_HZ


def test_idle_time_between_replies_is_not_counted():
    pacer, clocks = make()
    run(pacer, clocks, cost_per_draw=0.018)
    slow = pacer.interval
    pacer.idle()
    clocks.wall += 60.0  # a minute of reading, no redraws
    pacer.drew()
    assert pacer.interval == slow  # the first redraw of the next reply only starts measuring
