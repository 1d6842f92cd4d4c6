"""The python-functions miner: a small package written here, and a smoke run on {stdlib}."""

from __future__ import annotations

import ast
import random
import re
import textwrap
from pathlib import Path

import pytest

from lmforge.testing import run_spec
from lmforge_data.config import PythonFunctionsConfig
from lmforge_data.sources.corrupt import corrupt
from lmforge_data.sources.python_functions import docstring_summary, python_functions
from tests.data.helpers import curate_spec, read_split

GEOMETRY = '''
"""Geometry helpers."""
import math


def area_of_circle(radius: float) -> float:
    """Return the area of a circle with the given radius.

    More details that are not part of the summary.
    """

    return math.pi * radius ** 2


def clamp(value, low, high):
    """Limit value to the closed interval between low and high."""
    if value < low:
        return low
    if value > high:
        return high
    return value


def _private_helper(x):
    """A private helper that should be skipped by default."""
    return x + 1


def stub(x):
    """This function is only a stub and has no real body."""
    raise NotImplementedError


def short(x):
    """Too short."""
    return x


class Accumulator:
    """Collects numbers."""

    def __init__(self):
        """Create an empty accumulator for numbers."""
        self.items = []

    @staticmethod
    def total_of(values):
        """Add up all values in the sequence and return the sum."""
        total = 0
        for v in values:
            total += v
        return total
'''

STRINGS = '''
def shout(text):
    """Return the text in upper case followed by an exclamation mark."""
    loud = text.upper()
    loud = loud + "!"
    return loud


def count_vowels(word):
    """Count how many vowels appear in the given word."""
    return sum(1 for ch in word.lower() if ch in "aeiou")
'''


@pytest.fixture()
def package(tmp_path: Path) -> Path:
    pkg = tmp_path / "pkg"
    (pkg / "tests").mkdir(parents=True)
    (pkg / "geometry.py").write_text(GEOMETRY.lstrip())
    (pkg / "strings.py").write_text(STRINGS.lstrip())
    (pkg / "broken.py").write_text("def oops(:\n")
    (pkg / "tests" / "test_geometry.py").write_text(
        'def test_area():\n    """Check that the area of the unit circle is pi."""\n'
        '    assert True\n')
    return pkg


def _mine(package: Path, mode: str, **kw) -> tuple[list[dict], object]:
    src = python_functions(PythonFunctionsConfig(path=str(package / "**" / "*.py"), mode=mode,
                                                 **kw))
    return list(src), src


def test_text_mode_walks_sorted_and_excludes_tests(package):
    rows, src = _mine(package, "text")
    assert [Path(r["_where"]).name for r in rows] == ["broken.py", "geometry.py", "strings.py"]
    assert src.skipped == {}  # broken.py is valid text; only function modes parse
    assert rows[1]["text"].startswith('"""Geometry helpers."""')


def test_chat_mode_instruction_and_code_without_docstring(package):
    rows, src = _mine(package, "chat")
    names = [r["_where"].split()[-1] for r in rows]
    assert names == ["area_of_circle", "clamp", "Accumulator.total_of", "shout",
                     "count_vowels"]
    assert src.skipped == {"syntax_error": 1}
    user, assistant = rows[0]["messages"]
    assert user == {"role": "user", "content": "Write a Python function `area_of_circle("
                    "radius: float) -> float` that: Return the area of a circle with the "
                    "given radius."}
    assert assistant["role"] == "assistant"
    assert assistant["content"] == ("def area_of_circle(radius: float) -> float:\n"
                                    "    return math.pi * radius ** 2\n")
    method = rows[2]["messages"]
    assert method[0]["content"].startswith("Write a Python method `total_of(values)` of class "
                                           "`Accumulator` that: Add up all values")
    # dedented, decorator kept, docstring gone
    assert method[1]["content"].startswith("@staticmethod\ndef total_of(values):\n    total = 0")
    assert '"""' not in method[1]["content"]
    for r in rows:
        ast.parse(r["messages"][1]["content"])
    assert len(_mine(package, "chat", include_private=True)[0]) == 6
    assert len(_mine(package, "chat", min_doc_chars=54)[0]) == 2  # summaries of 56 and 62
    sizes = sorted(len(r["messages"][1]["content"].rstrip("\n")) for r in rows)
    assert sizes[0] < sizes[1]
    assert len(_mine(package, "chat", max_function_chars=sizes[0])[0]) == 1


def test_preference_mode_rejected_is_a_parsing_wrong_variant(package):
    rows, _ = _mine(package, "preference")
    chat, _ = _mine(package, "chat")
    assert len(rows) == 5
    for r, c in zip(rows, chat):
        assert r["prompt"] == c["messages"][:1]
        assert r["chosen"] == c["messages"][1]["content"]
        assert r["rejected"] != r["chosen"]
        assert ast.dump(ast.parse(r["rejected"])) != ast.dump(ast.parse(r["chosen"]))
        # one local edit: at most two lines differ
        a, b = r["chosen"].splitlines(), r["rejected"].splitlines()
        assert abs(len(a) - len(b)) <= 1
    again, _ = _mine(package, "preference")
    assert again == rows  # deterministic
    other_seed, _ = _mine(package, "preference", seed=1)
    assert [r["rejected"] for r in other_seed] != [r["rejected"] for r in rows]


def test_corruption_kinds():
    code = textwrap.dedent('''\
        def f(xs, limit):
            total = 0
            count = 0
            for x in xs:
                if x < limit:
                    total += x
                    count += 1
            return total, count
        ''')
    variants = {corrupt(code, random.Random(i)) for i in range(40)}
    kinds = {k for _, k in variants}
    assert {"operator", "drop"} <= kinds
    texts = {v for v, _ in variants}
    assert code.replace("x < limit", "x >= limit") in texts
    assert code.replace("            total += x\n", "") in texts
    assert code.replace("total += x", "total -= x") in texts
    swap = "def g(a):\n    b = a * 2\n    c = b + 1\n    return c\n"
    assert "def g(a):\n    c = b + 1\n    b = a * 2\n    return c\n" in {
        corrupt(swap, random.Random(i))[0] for i in range(60)}
    assert corrupt("def h():\n    return x\n", random.Random(0)) is None


def test_name_corruption_reads_an_undefined_variable():
    code = "def area(width, height):\n    s = 'é'\n    total = width * height\n    return total\n"
    seen = set()
    for i in range(30):
        new, kind = corrupt(code, random.Random(i), ("name",))
        assert kind == "name"
        tree = ast.parse(new)
        defined = {"width", "height", "s", "total"}
        loads = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)
                 and isinstance(n.ctx, ast.Load)}
        undefined = loads - defined
        assert len(undefined) == 1, new  # exactly one read now names an undefined variable
        seen.add(undefined.pop())
        assert new.count("\n") == code.count("\n") and "'é'" in new
    assert len(seen) > 3
    # only the requested kinds are used
    both = "def f(a, b):\n    c = a + b\n    return c\n"
    assert {corrupt(both, random.Random(i), ("operator",))[1] for i in range(10)} == {"operator"}


def test_multiple_choice_mode(package):
    # wrong choices are the other functions of the answer's file: geometry.py has four usable
    # names with include_private, strings.py only two (too few for a question)
    assert _mine(package, "multiple-choice")[0] == []
    rows, src = _mine(package, "multiple-choice", include_private=True)
    assert src.skipped == {"syntax_error": 1, "too_few_names_in_file": 2}
    geometry = {"area_of_circle", "clamp", "_private_helper", "total_of"}
    assert len(rows) == 4
    answers = set()
    for r in rows:
        name = r["_where"].split()[-1].split(".")[-1]
        assert len(r["choices"]) == 4 and set(r["choices"]) == geometry
        assert r["choices"][r["answer"]] == name
        assert r["question"].startswith("Which Python function does this: ")
        answers.add(r["answer"])
    assert {r["choices"][r["answer"]] for r in rows} == geometry  # each name answers once
    assert len(answers) > 1  # the position is randomised
    assert _mine(package, "multiple-choice", include_private=True)[0] == rows


def test_docstring_summary():
    assert docstring_summary("First line\ncontinues here.\n\nDetails.") == \
        "First line continues here."


def test_stdlib_smoke_through_the_stage(pm, tmp_path):
    # the default path is {stdlib}/**/*.py
    spec = curate_spec({"sources": [{"type": "python-functions", "mode": "chat"}],
                        "format": "chat", "max_documents": 20, "heldout_min": 2})
    result = run_spec(spec, pm, tmp_path / "run")
    metrics = result.stages[0].metrics
    assert metrics["docs_in"] == 20
    assert metrics["train_rows"] + metrics["heldout_rows"] == metrics["docs_out"]
    assert metrics["heldout_rows"] >= 2
    out = tmp_path / "run" / "corpus" / "outputs" / "dataset"
    rows = read_split(out, "train")
    assert rows[0]["messages"][0]["role"] == "user"
    assert rows[0]["messages"][1]["content"].startswith(("def ", "@", "async def "))


def test_split_by_source_holds_out_the_same_files_across_formats(pm, tmp_path):
    """Datasets derived from one set of files hold out the same files with split_by: source."""
    pkg = tmp_path / "many"
    pkg.mkdir()
    for i in range(24):
        pkg.joinpath(f"mod{i:02d}.py").write_text(
            f'def f{i}(x):\n    """Return x plus {i} for module number {i}."""\n'
            f"    return x + {i}\n\n\n"
            f'def g{i}(y):\n    """Return y times {i} for module number {i}."""\n'
            f"    return y * {i}\n")

    def split_files(mode: str, fmt: str, run: str) -> tuple[set[str], set[str]]:
        spec = curate_spec({"sources": [{"type": "python-functions", "mode": mode,
                                         "path": f"{pkg}/*.py"}],
                            "format": fmt, "split_by": "source", "heldout_fraction": 0.3,
                            "heldout_min": 0})
        run_spec(spec, pm, tmp_path / run)
        out = tmp_path / run / "corpus" / "outputs" / "dataset"

        def module(row: dict) -> str:
            text = row.get("text") or row["messages"][1]["content"]
            return re.search(r"def [fg](\d+)", text).group(1)

        return ({module(r) for r in read_split(out, "train")},
                {module(r) for r in read_split(out, "heldout")})

    text_train, text_held = split_files("text", "text", "a")
    chat_train, chat_held = split_files("chat", "chat", "b")
    assert text_held and text_train and not (text_held & text_train)
    assert chat_held == text_held and chat_train == text_train
