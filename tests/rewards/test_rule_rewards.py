"""``python-checks``, ``exact-match`` and ``composite`` on hand-made samples with hand-computed
scores; the names check; code extraction."""

from __future__ import annotations

import pytest

import lmforge_rewards.plugin
from lmforge.codecheck import extract_code
from lmforge.rewards import RewardSample
from lmforge.testing import plugin_manager
from lmforge_rewards.composite import Composite
from lmforge_rewards.exact_match import ExactMatch
from lmforge_rewards.names import undefined_names, unresolved_imports
from lmforge_rewards.python_checks import PythonChecks
from lmforge_rewards.sandbox import SubprocessSandbox

PM = plugin_manager(lmforge_rewards.plugin)


def cfg(kind: str, name: str, **kw):
    return PM.component_config_model(kind, name)(type=name, **kw)


TESTS = ">>> clamp(5, 0, 3)\n3\n>>> clamp(-1, 0, 3)\n0\n>>> clamp(2, 0, 3)\n2\n>>> clamp(9, 0, 9)\n9\n"
PROMPT = [{"role": "user", "content": "Write clamp(x, lo, hi)."}]


def sample(code: str, tests: str | None = TESTS) -> RewardSample:
    return RewardSample(prompt=PROMPT, completion=code, tests=tests,
                        meta={"entry_point": "clamp"})


@pytest.fixture(scope="module")
def checks():
    reward = PythonChecks(cfg("reward", "python-checks"))
    reward.use_sandbox(SubprocessSandbox(cfg("sandbox", "subprocess", timeout_s=5)))
    yield reward
    reward.close()


def test_python_checks_partial_credit(checks):
    correct = "```python\ndef clamp(x, lo, hi):\n    return max(lo, min(x, hi))\n```"
    # wrong for values below lo: passes 3 of 4 examples -> 0.2 + 0.2 + 0.6 * 3/4
    no_lower = "def clamp(x, lo, hi):\n    return min(x, hi)\n"
    # a typo in a name: parses (0.2), names do not resolve, every example raises NameError
    typo = "def clamp(x, lo, hi):\n    return max(lo, min(x, hgh))\n"
    broken = "def clamp(x, lo, hi)\n    return x\n"
    wrong_name = "def clip(x, lo, hi):\n    return max(lo, min(x, hi))\n"
    numpy = "import numpy\ndef clamp(x, lo, hi):\n    return max(lo, min(x, hi))\n"
    loops = "def clamp(x, lo, hi):\n    while True:\n        pass\n"
    out = checks.score([sample(c) for c in (correct, no_lower, typo, broken, wrong_name, numpy,
                                            loops)])
    assert out.scores == pytest.approx([1.0, 0.85, 0.2, 0.0, 0.2, 0.2, 0.4])
    d = out.details
    assert d[0]["doctests"]["passed"] == 4 and d[1]["doctests"]["passed"] == 3
    assert d[2]["undefined"] == ["hgh"] and d[3] == {"parses": False, "names_resolve": False,
                                                     "doctests": None}
    assert d[4]["defines_entry_point"] is False and d[5]["unknown_imports"] == ["numpy"]
    assert d[6]["doctests"]["limit"] == "time"


def test_python_checks_uses_the_codes_own_doctests_without_tests(checks):
    own = ('def clamp(x, lo, hi):\n    """\n    >>> clamp(5, 0, 3)\n    3\n    >>> clamp(1, 0, 3)\n'
           '    2\n    """\n    return max(lo, min(x, hi))\n')
    none = "def clamp(x, lo, hi):\n    return max(lo, min(x, hi))\n"
    out = checks.score([sample(own, tests=None), sample(none, tests=None)])
    # own doctests: 1 of 2 pass (the second is wrong) -> 0.4 + 0.3; none: no doctest credit
    assert out.scores == pytest.approx([0.7, 0.4])
    assert out.details[1]["doctests"] is None


def test_forged_report_earns_nothing(checks):
    forged = ("print('@@lmforge-doctest 0 {\"attempted\": 4, \"failed\": 0}')\n"
              "import os\nos._exit(0)\ndef clamp(x, lo, hi):\n    return x\n")
    out = checks.score([sample(forged)])
    assert out.scores == pytest.approx([0.4])  # parses + names; no doctest credit


def test_names_check():
    assert undefined_names("def f(x):\n    return x + y\n") == ["y"]
    assert undefined_names("import os\nclass A:\n    k = 1\n    def m(self):\n"
                           "        return os.sep, A.k, [i for i in range(3)], __name__\n") == []
    assert undefined_names("def f():\n    global G\n    G = 1\ndef g():\n    return G\n") == []
    assert undefined_names("from os.path import *\nprint(join('a', 'b'), nope)\n") == []
    import ast
    assert unresolved_imports(ast.parse("import json, yaml\nfrom torch import nn\n")) == [
        "torch", "yaml"]


def test_extract_code_picks_the_block_defining_the_entry_point():
    text = "Here:\n```\nprint('usage')\n```\nand\n```python\ndef clamp(x):\n    return x\n```\n"
    assert extract_code(text, "clamp") == "def clamp(x):\n    return x"
    assert extract_code(text) == "print('usage')"
    assert extract_code("def f():\n    pass\n") == "def f():\n    pass"


@pytest.mark.parametrize("completion,reference,expected", [
    ("Natalia sold 48 + 24 = 72 clips.\n#### 72", "She sold 48/2 = 24 in May.\n#### 72", 1.0),
    ("The answer is 1,234.", "#### 1234", 1.0),          # last number, thousands separator
    ("#### 72.0", "72", 1.0),                              # numeric equality
    ("so 3 apples, then 5 pears", "5", 1.0),               # the last number wins
    ("#### 7\nbut also 8", "7", 1.0),                      # '####' is tried before last-number
    ("The answer is $18.", "#### 18", 1.0),
    ("I think 71", "#### 72", 0.0),
    ("no number here", "#### 3", 0.0),
    ("-4", "#### -4", 1.0),
])
def test_exact_match_gsm8k_style(completion, reference, expected):
    reward = ExactMatch(cfg("reward", "exact-match"))
    out = reward.score([RewardSample(prompt=PROMPT, completion=completion, reference=reference)])
    assert out.scores == [expected]


def test_exact_match_custom_pattern_and_case():
    reward = ExactMatch(cfg("reward", "exact-match", extract=[r"answer:\s*(\w+)"]))
    samples = [RewardSample(prompt=PROMPT, completion="ANSWER: Paris", reference="paris"),
               RewardSample(prompt=PROMPT, completion="answer: Lyon", reference="paris")]
    assert reward.score(samples).scores == [1.0, 0.0]
    strict = ExactMatch(cfg("reward", "exact-match", extract=[r"answer:\s*(\w+)"],
                            case_sensitive=True))
    assert strict.score(samples[:1]).scores == [0.0]
    with pytest.raises(ValueError, match="no reference"):
        reward.score([RewardSample(prompt=PROMPT, completion="x")])
    with pytest.raises(Exception, match="not a valid regular expression"):
        cfg("reward", "exact-match", extract=["(unclosed"])


def test_composite_is_the_weighted_sum():
    config = cfg("reward", "composite", rewards=[
        {"weight": 2.0, "reward": {"type": "exact-match"}},
        {"weight": -0.5, "reward": {"type": "composite", "rewards": [
            {"weight": 3.0, "reward": {"type": "exact-match", "extract": [r"(\d+)!"]}}]}},
    ])
    reward = Composite(config, plugins=PM)
    samples = [RewardSample(prompt=PROMPT, completion="#### 5 and 6!", reference="5"),
               RewardSample(prompt=PROMPT, completion="#### 4 and 5!", reference="5")]
    out = reward.score(samples)
    # sample 0: 2 * 1 + -0.5 * (3 * 0) = 2.0;  sample 1: 2 * 0 + -0.5 * (3 * 1) = -1.5
    assert out.scores == pytest.approx([2.0, -1.5])
    assert out.details[1]["terms"][1]["score"] == pytest.approx(3.0)
    assert reward.requires() == {}
