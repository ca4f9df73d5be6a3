"""Chat templates rendered under a budget of time, steps and size, stopped from inside Jinja's sandbox.

A chat template is a program that came with the model. Jinja's sandbox stops it from reaching
Python, but not from looping: two nested `range(100000)` loops hung the app for good, and a
Python thread cannot be stopped from outside. So the template stops itself. Every place where
it can spend unbounded time or memory passes through a check, as the sandbox's own hooks allow:

- each loop iteration (the loop's iterable is wrapped when the template is parsed);
- each call, each filter, each `+ * ** %` (`call`, `call_binop`) and each `~`;
- each piece of text joined: the output, and text captured by `{% set %}`, macros and filter
  blocks (`Environment.concat`), and each `{{ }}` value before it becomes text (`finalize`).

A check counts a step and reads the clock, and refuses a result larger than the size budget,
or the operation itself where its size is known beforehand ('x' * n, n-wide formats, join,
indent, replace, 2 ** n). Results also count against a total of characters built, so a
template cannot hold many budget-sized pieces at once. The budget is the same for every
template: 2 s, 2 million steps, and 1 MB of text plus twice the conversation's own.

Cost, measured on the default model's template and a 20-message conversation (300 renders each,
paired, load 1.9 on 2 cores): 0.32 ms a render with the budget, 0.16 ms in the plain sandbox. A
turn renders twice, so the budget adds ~0.3 ms a turn, under 2% of one decode step (~22 ms).
"""

import functools
import math
import re
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any, Optional

from jinja2 import nodes
from jinja2.ext import Extension
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import _PassArg
from jinja2.visitor import NodeTransformer

TIME_S = 2.0  # a real template renders a long conversation in milliseconds
STEPS = 2_000_000  # loop iterations, calls, operators, pieces of text: ~1 s of Python at worst
TEXT_CHARS = 1_000_000  # markup around the messages; real templates write a few kilobytes
BUILT_TIMES = 16  # characters built over a whole render, in sizes of the budget
MAX_POWER_BITS = 1 << 16  # 2 ** n: a number of 65,536 bits is ~20,000 digits, plenty for a template


class OverBudget(Exception):
    """The template used more than its budget; the text says which part."""


class Budget:
    """One render's allowance. `size` bounds any one value (characters, or items of a list)."""

    def __init__(self, size: int, active: bool = True, time_s: Optional[float] = None):
        self.size, self.steps, self.active = size, STEPS, active
        self.time_s = TIME_S if time_s is None else time_s
        self.deadline = time.monotonic() + self.time_s
        self.steps_left = self.steps
        self.built_left = BUILT_TIMES * size
        self._sizes: dict[int, tuple[Any, int]] = {}  # id -> (the object, kept alive so its id stays its own; size)

    def step(self) -> None:
        if not self.active:
            return
        self.steps_left -= 1
        if self.steps_left < 0:
            raise OverBudget(f"more than {self.steps:,} steps")
        if self.steps_left & 31:  # the clock every 32 steps: each step is bounded in size, so in time
            return
        if time.monotonic() > self.deadline:
            raise OverBudget(f"more than {self.time_s:g} s")

    def seconds_left(self) -> float:
        return self.deadline - time.monotonic()

    def fits(self, n: int, what: str) -> None:
        if n > self.size:
            raise OverBudget(f"{what} of {n:,} characters or items (the budget is {self.size:,})")

    def built(self, value: Any) -> Any:
        """Count a result against the budget; returns it."""
        self.spend(self.size_of(value), "a value")
        return value

    def spend(self, n: int, what: str) -> None:
        self.fits(n, what)
        if self.active:
            self.built_left -= n
            if self.built_left < 0:
                raise OverBudget(f"more than {BUILT_TIMES * self.size:,} characters built in all")

    def size_of(self, value: Any) -> int:
        """About the length of `value` as text, counted only up to just past the budget."""
        if isinstance(value, (str, bytes)):
            return len(value)
        if isinstance(value, int) and not isinstance(value, bool):
            return value.bit_length() // 3 + 1
        if not isinstance(value, (list, tuple, dict, set, frozenset)):
            return 8
        known = self._sizes.get(id(value)) if self.active else None
        if known is not None and known[0] is value:
            return known[1]
        total, stack = 0, [value]
        while stack and total <= self.size:
            item = stack.pop()
            total += 2
            if isinstance(item, (str, bytes)):
                total += len(item)
            elif isinstance(item, dict):
                stack.extend(item.keys())
                stack.extend(item.values())
            elif isinstance(item, (list, tuple, set, frozenset)):
                stack.extend(item)
            else:
                total += 8
        if self.active:
            self._sizes[id(value)] = (value, total)
        return total


_IDLE = Budget(TEXT_CHARS, active=False)  # outside a render: Jinja folds constants while it compiles
_local = threading.local()


def current() -> Budget:
    return getattr(_local, "budget", None) or _IDLE


class rendering:
    """`with rendering(budget):` makes `budget` the one the hooks count against, on this thread."""

    def __init__(self, budget: Budget):
        self.budget = budget

    def __enter__(self) -> Budget:
        self.outer, _local.budget = getattr(_local, "budget", None), self.budget
        return self.budget

    def __exit__(self, *exc) -> None:
        _local.budget = self.outer


# --- what the size of an operation will be, where it can be known before running it --------------

_WIDTH = re.compile(r"\d{7,}")  # a width or precision of a million or more, in % or {} formats


def _check_format(fmt: Any, budget: Budget) -> None:
    if isinstance(fmt, str) and _WIDTH.search(fmt):
        raise OverBudget("a format with a field a million characters wide")


def _check_args(args: Iterable[Any], budget: Budget) -> None:
    """Numbers passed to a method or filter are widths and counts: none beyond the size budget."""
    for arg in args:
        if isinstance(arg, int) and not isinstance(arg, bool) and abs(arg) > budget.size:
            raise OverBudget(f"a call with the number {arg:,}")
        if isinstance(arg, float) and math.isfinite(arg) and abs(arg) > budget.size:
            raise OverBudget(f"a call with the number {arg:g}")


def _joinable(items: Any, budget: Budget, count_steps: bool = True) -> list:
    """The items of a join, their total size checked as they come (before joining), one step each
    unless they are pieces of the template's own output (each already came from a counted step)."""
    out, total = [], 0
    for item in items:
        if count_steps:
            budget.step()
        total += len(item) if type(item) is str else budget.size_of(item)
        if total > budget.size:
            budget.fits(total, "a join")
        out.append(item)
    return out


def _check_growth(name: str, value: Any, args: tuple, budget: Budget) -> None:
    """Operations whose result can be much larger than what they are given."""
    if not isinstance(value, str):
        return
    if name == "replace" and len(args) >= 2 and isinstance(args[0], str) and isinstance(args[1], str):
        count = len(value) + 1 if args[0] == "" else value.count(args[0])
        budget.fits(len(value) + count * max(0, len(args[1]) - len(args[0])), "a replace")
    elif name == "indent" and args:
        width = len(args[0]) if isinstance(args[0], str) else args[0] if isinstance(args[0], int) else 0
        budget.fits(len(value) + (value.count("\n") + 1) * width, "an indent")
    elif name == "expandtabs" and args and isinstance(args[0], int):
        budget.fits(len(value) + value.count("\t") * args[0], "an expandtabs")
    elif name in ("format", "format_map"):
        _check_format(value, budget)


class _Hooks(Extension):
    """Functions the parsed template calls by a name it cannot write itself (an extension attribute)."""

    def loop_items(self, iterable: Any) -> Iterator:
        budget = current()
        for item in iterable:
            budget.step()
            yield item

    def joined(self, *parts: Any) -> str:
        """`a ~ b`: text joined, each part's size known first."""
        budget = current()
        total = 0
        for part in parts:
            total += budget.size_of(part)
            budget.fits(total, "a ~ join")
        return "".join(map(str, parts))  # counted by the call hook, like any call


class _Budgeted(NodeTransformer):
    """Loops iterate through `_Hooks.loop_items`; `~` joins through `_Hooks.joined`."""

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)
        hook = nodes.ExtensionAttribute(_Hooks.identifier, "loop_items", lineno=node.lineno)
        node.iter = nodes.Call(hook, [node.iter], [], None, None, lineno=node.lineno)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        hook = nodes.ExtensionAttribute(_Hooks.identifier, "joined", lineno=node.lineno)
        return nodes.Call(hook, node.nodes, [], None, None, lineno=node.lineno)


def _budgeted_filter(name: str, func):
    """A filter that counts a step, checks its arguments and counts its result."""
    skip = 1 if _PassArg.from_obj(func) is not None else 0  # the context or environment Jinja passes first

    @functools.wraps(func)
    def run(*args, **kwargs):
        budget = current()
        budget.step()
        value, rest = (args[skip], args[skip + 1 :]) if len(args) > skip else (None, ())
        _check_args((*rest, *kwargs.values()), budget)
        _check_growth(name, value, rest, budget)
        if name in ("string", "pprint", "tojson", "format"):
            indent = kwargs.get("indent", rest[0] if name == "tojson" and rest else 0)
            widen = 1 + (indent if isinstance(indent, int) and indent > 0 else 0)
            sizes = sum(budget.size_of(a) for a in (value, *rest, *kwargs.values()))
            budget.fits(sizes * widen, f"the {name} filter's text")
        if name == "join" and value is not None:
            args = (*args[:skip], _joinable(value, budget), *rest)
        if name == "sum" and isinstance(kwargs.get("start", rest[1] if len(rest) > 1 else 0), (list, tuple, str)):
            raise OverBudget("the sum filter over lists (quadratic in their length)")
        return budget.built(func(*args, **kwargs))

    return run


class BudgetedEnvironment(ImmutableSandboxedEnvironment):
    """The sandbox transformers uses for chat templates, with every hook above in place."""

    intercepted_binops = frozenset({"+", "*", "**", "%"})  # also keeps Jinja from folding them while compiling

    def __init__(self, **options: Any):
        super().__init__(extensions=[_Hooks], finalize=self._finalize, **options)
        self.filters = {name: _budgeted_filter(name, f) for name, f in self.filters.items()}

    def _parse(self, source: str, name: Optional[str], filename: Optional[str]) -> nodes.Template:
        # The one private hook used: Jinja has no public step between parsing and generating code.
        return _Budgeted().visit(super()._parse(source, name, filename))

    @staticmethod
    def _finalize(value: Any) -> Any:
        if type(value) is not str:  # a string's size was counted when it was made
            budget = current()
            budget.fits(budget.size_of(value), "an output value")
        return value

    @staticmethod
    def concat(parts: Iterable[str]) -> str:  # replaces "".join for output and captured text
        budget = current()
        text = "".join(_joinable(parts, budget, count_steps=False))
        budget.spend(len(text), "the text")
        return text

    def call(__self, __context, __obj, *args: Any, **kwargs: Any) -> Any:  # noqa: B902 (the sandbox's signature)
        budget = current()
        budget.step()
        method = getattr(__obj, "__wrapped__", __obj)  # the sandbox wraps str.format in a function of its own
        owner = getattr(method, "__self__", None)
        if isinstance(owner, (str, bytes, list, tuple, dict)):  # a method of a built-in value
            _check_args((*args, *kwargs.values()), budget)
            _check_growth(method.__name__, owner, args, budget)
            if method.__name__ == "join" and args:
                args = (_joinable(args[0], budget), *args[1:])
            if method.__name__ in ("format", "format_map"):
                for arg in (*args, *kwargs.values()):
                    budget.fits(budget.size_of(arg), "a format argument")
        return budget.built(super().call(__context, __obj, *args, **kwargs))

    def call_binop(self, context, operator: str, left: Any, right: Any) -> Any:
        budget = current()
        budget.step()
        if operator == "+" and type(left) is str and type(right) is str:  # most of a chat template's work
            budget.spend(len(left) + len(right), "a concatenation")
            return left + right
        sized = (str, bytes, list, tuple)
        if operator == "*":
            seq, n = (left, right) if isinstance(left, sized) else (right, left)
            if isinstance(seq, sized) and isinstance(n, int):
                budget.fits(len(seq) * max(n, 0), "a repetition")
            elif isinstance(left, int) and isinstance(right, int):
                if left.bit_length() + right.bit_length() > MAX_POWER_BITS:
                    raise OverBudget(f"a product of {left.bit_length() + right.bit_length():,} bits")
        elif operator == "+" and isinstance(left, sized) and isinstance(right, sized):
            budget.fits(len(left) + len(right), "a concatenation")
        elif operator == "**" and isinstance(left, int) and isinstance(right, int) and abs(left) > 1 and right > 0:
            if right * abs(left).bit_length() > MAX_POWER_BITS:
                raise OverBudget(f"a power of {right:,} bits or more")
        elif operator == "%" and isinstance(left, str):
            _check_format(left, budget)
            budget.fits(len(left) + budget.size_of(right), "a % format")
        return budget.built(super().call_binop(context, operator, left, right))
