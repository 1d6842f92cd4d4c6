"""c4, fineweb, toxicity and the pii additions, with hand-computed numbers."""

from __future__ import annotations

import pytest

from lmforge import StageInputError
from lmforge_data.filter_config import C4FilterConfig, FineWebFilterConfig, ToxicityFilterConfig
from lmforge_data.filters import lines, pii, toxicity

GOOD = "The cat sat on the mat today."


# -- c4 ----------------------------------------------------------------------------------------
def test_c4_drops_bad_lines_and_counts_them():
    f = lines.c4_factory(C4FilterConfig(min_sentences=2))
    text = "\n".join([GOOD, "Menu", "Enable JavaScript to view this page.",
                      "Read our privacy policy for details.", "Wait for it...",
                      "He said hello [1] to the crowd.", GOOD])
    r = f(text)
    assert r.keep and r.reason == "lines_removed"
    assert r.text == "\n".join([GOOD, "He said hello  to the crowd.", GOOD])
    assert dict(r.counts) == {"no_terminal_punct": 2, "javascript": 1, "policy": 1}


def test_c4_page_rules():
    f = lines.c4_factory(C4FilterConfig())
    assert f("Lorem ipsum dolor sit amet.\n" + GOOD).reason == "lorem_ipsum"
    assert f("function f() { return 1; }.").reason == "curly_bracket"
    assert f("no punctuation here\nnor here").reason == "no_lines"
    four = "\n".join([GOOD] * 4)
    assert f(four).reason == "too_few_sentences"  # 4 < 5
    five = "\n".join([GOOD] * 5)
    assert f(five).keep and f(five).text is None  # nothing to change


# -- fineweb -----------------------------------------------------------------------------------
def test_fineweb_rules_at_their_thresholds():
    f = lines.fineweb_factory(FineWebFilterConfig())
    # 1 of 9 lines ends in punctuation: 0.111 < 0.12
    nine = "\n".join(["a long enough line without an end mark here"] * 0 + [
        f"line number {i} of a list without any end mark at all" for i in range(8)] + [GOOD])
    assert f.failed_check(nine) == "line_punct_ratio"
    # 2 of 3 lines short (<= 30 chars): 0.667 is not > 0.67; 3 of 4 is
    long = "This line is certainly longer than thirty characters."
    assert f.failed_check("\n".join([GOOD, GOOD + " x", long])) is None
    assert f.failed_check("\n".join(["Short one.", "Short two.", "Short three.", long])
                          ) == "short_line_ratio"
    # a repeated line: 53 of 53 + 53 + 63 non-newline chars = 0.31 > 0.01
    assert f.failed_check("\n".join([long, long, long + " And more."])) == "char_dup_ratio"
    # newlines / words: 3 / 8 = 0.375 > 0.3 (long lines of two words each)
    lst = "\n".join(["Extraordinarily-hyphenated-compound phrases.",
                     "Unquestionably-overlong-hyphenated expressions.",
                     "Characteristically-verbose-hyphenated sentences.",
                     "Incomprehensibly-elaborate-hyphenated clauses."])
    assert f.failed_check(lst) == "list_ratio"
    assert lines.FineWebFilter(max_newline_word_ratio=0.38).failed_check(lst) is None


# -- toxicity ----------------------------------------------------------------------------------
def test_toxicity_scores_by_category(tmp_path):
    wl = tmp_path / "list.txt"
    wl.write_text("# test list\n[rude]\ndarn*\nheck\n[threat]\nre:\\bi will hurt you\\b\n")
    f = toxicity.factory(ToxicityFilterConfig(word_list=str(wl), thresholds={"rude": 0.25}))
    # 2 rude matches in 10 words = 0.2 <= 0.25: kept, scored
    r = f("Darned cat and heck it is a very fine cat")
    assert r.keep and r.metadata == {"toxicity": {"rude": 0.2}}
    r = f("darn darn heck the cat")  # 3 / 5 = 0.6
    assert (r.keep, r.reason) == (False, "rude")
    assert f("I will hurt you").reason == "threat"  # default threshold 0: any match
    assert f("Hecktic is not a word match").keep  # whole words only
    default = toxicity.factory(ToxicityFilterConfig())
    assert default("This is shit.").reason == "profanity"
    assert default("A pleasant afternoon in the park.").keep


def test_toxicity_list_errors_name_file_and_line(tmp_path):
    wl = tmp_path / "bad.txt"
    wl.write_text("darn\n")
    with pytest.raises(StageInputError, match=r"bad.txt:1: term 'darn' comes before any"):
        toxicity.factory(ToxicityFilterConfig(word_list=str(wl)))
    wl.write_text("[x]\nre:(unclosed\n")
    with pytest.raises(StageInputError, match=r"bad.txt:2: bad regular expression"):
        toxicity.factory(ToxicityFilterConfig(word_list=str(wl)))
    with pytest.raises(StageInputError, match="categories \\['nope'\\]"):
        toxicity.factory(ToxicityFilterConfig(thresholds={"nope": 0.1}))


# -- pii ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("text", ["Upgrade to version 3.11.2.1 today.", "v1.2.3.4 is out",
                                  "Python 3.12.0.1 and build 10.0.19041.1", "ver. 1.2.3.4",
                                  "In 2019 Main Street banks grew.", "I have 3 Big Dogs."])
def test_pii_keeps_versions_and_years(text):
    assert pii.PIIFilter().redact(text) == (text, {})


@pytest.mark.parametrize("text, redacted, kind", [
    ("ssh to 192.168.1.20 now", "ssh to <IP_ADDRESS> now", "ip_address"),
    ("server 10.0.0.1, version 2", "server <IP_ADDRESS>, version 2", "ip_address"),
    ("Send it to 221B Baker Street, please.", "Send it to <ADDRESS>, please.", "street_address"),
    ("Visit 1600 Pennsylvania Avenue NW, Washington, DC 20500 soon",
     "Visit <ADDRESS> soon", "street_address"),
    ("Office: 350 Fifth Ave, Suite 3300, New York, NY 10118.", "Office: <ADDRESS>.",
     "street_address"),
    ("Wir wohnen in der Hauptstraße 12, 10115 Berlin.", "Wir wohnen in der <ADDRESS>.",
     "street_address"),
])
def test_pii_redacts_ips_and_street_addresses(text, redacted, kind):
    assert pii.PIIFilter().redact(text) == (redacted, {kind: 1})
    assert pii.PIIFilter(street_address=False, ip_address=False).redact(text) == (text, {})
