"""Chat templates under a budget (model/loading/template_budget.py): a hostile one is refused at load in one
line that names it, in bounded time and memory; a real one renders exactly as the plain sandbox renders it."""

import functools
import json
from types import SimpleNamespace

import pytest
from hostile_files import run_python
from hypothesis import given, settings
from hypothesis import strategies as st
from jinja2.sandbox import ImmutableSandboxedEnvironment
from llama_vocab import vocab_path
from tiny_models import CHATML, QWEN3_STYLE

from model.errors import ModelError
from model.loading.chat_template import ChatTemplate, Message

NESTED = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
# source -> a phrase of the reason. Each would hang, or take gigabytes, without the budget.
HOSTILE = {
    "nested loops": (NESTED, "ran past its budget"),  # steps or time, whichever this machine reaches first
    "recursive calls": ("{% macro f(n) %}{{ f(n + 1) }}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", "RecursionError"),
    "exponential calls": (
        "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(60) }}",
        "ran past its budget",
    ),
    "doubling with +": (
        "{% set ns = namespace(a='xxxxxxxx') %}{% for i in range(40) %}{% set ns.a = ns.a + ns.a %}{% endfor %}",
        "a concatenation",
    ),
    "doubling with ~": (
        "{% set ns = namespace(a='xxxxxxxx') %}{% for i in range(40) %}{% set ns.a = ns.a ~ ns.a %}{% endfor %}",
        "a ~ join",
    ),
    "doubling in straight lines": (
        "{% set a = 'xxxxxxxx' %}" + "{% set a = a + a %}" * 30 + "{{ a }}",
        "a concatenation",
    ),
    "repetition": ("{{ 'x' * 1000000000 }}", "a repetition"),
    "list repetition": ("{{ [0] * 1000000000 }}", "a repetition"),
    "power": ("{{ 2 ** 100000000 }}", "a power"),
    "squaring": (
        "{% set ns = namespace(a=3) %}{% for i in range(40) %}{% set ns.a = ns.a * ns.a %}{% endfor %}",
        "a product",
    ),
    "center": ("{{ 'x'|center(999999999) }}", "the number 999,999,999"),
    "ljust": ("{{ 'x'.ljust(999999999) }}", "the number 999,999,999"),
    "% width": ("{{ '%0999999999d' % 1 }}", "a format"),
    "format width": ("{{ '{:999999999}'.format(1) }}", "a format"),
    "format filter": ("{{ '%0999999999d'|format(1) }}", "a format"),
    "replace": ("{{ ('x' * 100000)|replace('', 'yyyyyyyyyy') }}", "a replace"),
    "indent": ("{{ ('\\n' * 100000)|indent(1000) }}", "an indent"),
    "expandtabs": ("{{ ('\\t' * 100000).expandtabs(1000) }}", "an expandtabs"),
    "join of one big string many times": ("{% set s = 'x' * 1000000 %}{{ ([s] * 1000)|join }}", "budget"),
    "a shared list printed": (
        "{% set ns = namespace(a=['x']) %}{% for i in range(60) %}{% set ns.a = [ns.a, ns.a] %}{% endfor %}{{ ns.a }}",
        "an output value",
    ),
    "tojson wide": ("{{ messages|tojson(indent=100000) }}", "the tojson filter's text"),
    "sum of lists": ("{{ ([[1] * 100] * 100)|sum(start=[]) }}", "the sum filter"),
    "captured text": (
        "{% set x %}{% for i in range(100000) %}" + "x" * 1000 + "{% endfor %}{% endset %}",
        "characters",
    ),
    "too long": ("{{ 'x' }}" * 40000, "glasschat reads templates up to 256,000"),
    "too deep": ("{{ " + "(" * 2000 + "1" + ")" * 2000 + " }}", "cannot be compiled"),
    "too many nested loops": ("{% for i in 'a' %}" * 25 + "x" + "{% endfor %}" * 25, "cannot be compiled"),
}

CHILD = """
import json, sys, time
import model
from model.errors import ModelError
from model.loading import template_budget
from model.loading.chat_template import ChatTemplate
template_budget.TIME_S = 0.5  # the default is 2 s; the clock's check is the same at any length
out = {}
for name, source in json.loads(open(sys.argv[-1]).read()).items():
    start = time.monotonic()
    try:
        ChatTemplate(source, name=name)
        out[name] = ["loaded", time.monotonic() - start]
    except ModelError as exc:
        out[name] = [str(exc), time.monotonic() - start]
print(json.dumps(out))
"""


def test_hostile_templates_are_refused_at_load_in_one_line_naming_them(tmp_path):
    # In a child process: a budget that failed would hang the test instead of failing it.
    cases = tmp_path / "cases.json"
    cases.write_text(json.dumps({name: src for name, (src, _) in HOSTILE.items()}))
    run = run_python(CHILD, str(cases), timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.peak_rss < 2 << 30, run.peak_rss
    results = json.loads(run.stdout)
    for name, (_, phrase) in HOSTILE.items():
        line, seconds = results[name]
        assert "\n" not in line and f"({name})" in line and phrase in line, (name, line)
        assert seconds < 5, (name, seconds)


def test_the_default_budget_refuses_nested_loops_within_its_two_seconds(tmp_path):
    cases = tmp_path / "cases.json"
    cases.write_text(json.dumps({"nested": NESTED}))
    run = run_python(CHILD.replace("template_budget.TIME_S = 0.5", ""), str(cases), timeout=60)
    line, seconds = json.loads(run.stdout)["nested"]
    assert "ran past its budget" in line and "refuses it" in line
    assert seconds < 5


def test_the_budget_counts_steps_and_reads_the_clock(monkeypatch):
    from model.loading import template_budget as tb

    monkeypatch.setattr(tb, "STEPS", 100)
    budget = tb.Budget(1000)
    with pytest.raises(tb.OverBudget, match="more than 100 steps"):
        for _ in range(1000):
            budget.step()
    assert budget.steps_left == -1  # the 101st step
    monkeypatch.setattr(tb, "STEPS", 10**9)
    monkeypatch.setattr(tb, "TIME_S", 0.0)
    budget = tb.Budget(1000)
    with pytest.raises(tb.OverBudget, match="more than 0 s"):
        for _ in range(1000):
            budget.step()
    assert budget.steps_left == 10**9 - 32  # the clock is read every 32 steps


# --- real templates render exactly as the plain sandbox renders them ----------------------------------

GEMMA4 = vocab_path("gemma-4")


@functools.cache
def real_templates() -> dict[str, str]:
    found = {"chatml": CHATML, "qwen3 style": QWEN3_STYLE}
    if GEMMA4.exists():  # llama.cpp's test vocabulary carries Gemma 4's 12 KB template (tools, thinking)
        from model.loading.gguf_header import read_header

        found["gemma 4"] = read_header(GEMMA4, keys=("tokenizer.chat_template",))[0]["tokenizer.chat_template"]
    return found


@functools.cache
def compiled(source: str, name: str):
    """The template twice: in glasschat's budgeted sandbox, and in the plain one transformers uses."""
    from model.loading.chat_template import _raise

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = _raise
    return ChatTemplate(source, bos_token="<s>", name=name), env.from_string(source)


text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)
conversations = st.lists(st.tuples(st.sampled_from(["user", "assistant"]), text), min_size=1, max_size=8)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(conversation=conversations, generation=st.booleans(), system=st.none() | text)
def test_real_templates_render_as_without_the_budget(conversation, generation, system):
    messages = ([{"role": "system", "content": system}] if system is not None else []) + [
        {"role": role, "content": content} for role, content in conversation
    ]
    for name, source in real_templates().items():
        template, plain = compiled(source, name)
        try:
            expected = plain.render(messages=messages, add_generation_prompt=generation, bos_token="<s>")
        except Exception as exc:  # the template's own refusal (Gemma's roles must alternate, say)
            expected = type(exc).__name__
        try:
            got = template._render(messages, generation)
        except Exception as exc:
            got = type(exc.__cause__ or exc.__context__ or exc).__name__
        assert got == expected, name


def test_the_budgets_hooks_are_in_the_compiled_template():
    """Every loop iterates through the budget and every + goes through the sandbox's hook: if Jinja's
    code generation changed so that they did not, this fails before a hostile template could hang."""
    template = ChatTemplate(CHATML)
    code = template.template.environment.compile(CHATML, raw=True)
    assert "loop_items" in code and "environment.call_binop(context, '+'" in code
    parts = template.segments([Message("user", "hi"), Message("assistant", "yo")], True)
    assert parts == [
        "<|im_start|>user\n",
        0,
        "<|im_end|>\n<|im_start|>assistant\n",
        1,
        "<|im_end|>\n<|im_start|>assistant\n",
    ]


@pytest.mark.parametrize("size", [10_000, 400_000])
def test_long_messages_are_not_refused(size):
    """The size budget grows with what the conversation holds: a long paste is not hostile."""
    template = ChatTemplate(CHATML)
    long = "word " * (size // 5)
    text = template.render([Message("user", long), Message("assistant", long), Message("user", long)], True)
    assert text.count("word") == 3 * (size // 5)


@pytest.fixture
def fake_clock(monkeypatch):
    """The budget's clock, 10 ms later at every reading."""
    from model.loading import template_budget as tb

    clock = {"now": 0.0}

    def now() -> float:
        clock["now"] += 0.01
        return clock["now"]

    monkeypatch.setattr(tb, "time", SimpleNamespace(monotonic=now))
    return clock


LOOPS_1000 = "{% for i in range(1000) %}{% endfor %}" + CHATML  # ~30 readings of the clock: 0.3 s


def test_loading_costs_one_budget_in_all(fake_clock, monkeypatch):
    """Compiling and the sample render share one budget's clock: a template whose compiling took most of
    the 2 s has only the rest for its sample, so loading never costs two budgets (the fuzz tests saw one
    just under the budget take 2 s when compiled, again when sampled, and again on its first turn)."""
    from model.loading import template_budget as tb

    ChatTemplate(LOOPS_1000, name="slow")  # loads: 0.3 s of its sample's 0.5
    compile_as_before = tb.BudgetedEnvironment.from_string

    def slow_compile(self, *args, **kwargs):
        fake_clock["now"] += 1.9
        return compile_as_before(self, *args, **kwargs)

    monkeypatch.setattr(tb.BudgetedEnvironment, "from_string", slow_compile)
    with pytest.raises(
        ModelError, match=r"\(slow\) ran past its budget on a three-message conversation \(more than 0\.(0\d|1) s\)"
    ):
        ChatTemplate(LOOPS_1000, name="slow")


def test_a_template_slow_or_verbose_on_the_sample_is_refused_at_load(fake_clock, monkeypatch):
    """Real templates render the three-message sample in well under a millisecond as ~150 characters; one
    that takes half a second or writes 100,000 characters would cost that on every turn."""
    from model.loading import chat_template

    monkeypatch.setattr(chat_template, "SAMPLE_TIME_S", 0.2)
    with pytest.raises(
        ModelError, match=r"\(slow\) ran past its budget on a three-message conversation \(more than 0.2 s\)"
    ):
        ChatTemplate(LOOPS_1000, name="slow")
    with pytest.raises(ModelError, match=r"\(wordy\) writes 200,151 characters around a three-message conversation"):
        ChatTemplate("{{ 'x' * 200000 }}" + CHATML, name="wordy")
    ChatTemplate("{{ 'x' * 90000 }}" + CHATML, name="long but not absurd")
