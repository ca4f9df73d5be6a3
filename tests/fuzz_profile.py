"""How many examples the fuzz tests run, and from which seed: few and fixed by default, more on request.

By default each fuzz test runs a few examples from a fixed seed (the same ones on every run), so the
suite stays fast and a failure repeats. GLASSCHAT_FUZZ_EXAMPLES=N runs N per test (a big pass);
GLASSCHAT_FUZZ_SEED=S draws them from seed S instead, so a second big pass tries other examples.
"""

import os

from hypothesis import HealthCheck, seed, settings

EXAMPLES = os.environ.get("GLASSCHAT_FUZZ_EXAMPLES")
SEED = os.environ.get("GLASSCHAT_FUZZ_SEED")


def fuzz(default_examples: int):
    """A decorator for a `@given` test: its example count and seed, as above."""
    chosen = settings(
        max_examples=int(EXAMPLES or default_examples),
        derandomize=SEED is None,  # a fixed seed unless one is given
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
    )

    def apply(test):
        test = chosen(test)
        return seed(int(SEED))(test) if SEED is not None else test

    return apply
