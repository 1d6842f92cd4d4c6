"""The length, gopher and pii filters, with numbers."""

from __future__ import annotations

import pickle

import pytest

from lmforge_data.config import GopherFilterConfig, LengthFilterConfig, PIIFilterConfig
from lmforge_data.filters import gopher, length, pii
from tests.data.helpers import PARAGRAPH


# -- length ----------------------------------------------------------------------------------
def test_length_bounds_and_reasons():
    f = length.factory(LengthFilterConfig(min_chars=5, max_chars=20, min_words=2, max_words=3))
    assert f("  abc  ").reason == "too_short"
    assert f("x" * 21).reason == "too_long"
    assert f("abcdefgh").reason == "too_few_words"
    assert f("a b c d e").reason == "too_many_words"
    assert f("hello big world").keep
    assert length.factory(LengthFilterConfig())("   ").reason == "too_short"


# -- gopher ----------------------------------------------------------------------------------
def test_gopher_keeps_a_normal_paragraph():
    f = gopher.factory(GopherFilterConfig())
    assert len(PARAGRAPH.split()) >= 50
    assert f.failed_check(PARAGRAPH) is None
    assert f(PARAGRAPH).keep


def test_gopher_drops_repetitive_text():
    f = gopher.factory(GopherFilterConfig())
    spam = "buy cheap pills now " * 30
    assert f(spam).keep is False
    # 4-word cycle, 16 chars per cycle: "cheap pills" (10 chars, 30 times) is the top 2-gram
    words = spam.split()
    assert gopher.top_ngram_char_fraction(words, 2) == pytest.approx(10 * 30 / (16 * 30))
    assert f.failed_check(spam) == "stop_words"  # NL checks come first; code mode reaches n-grams
    assert gopher.GopherFilter(code=True).failed_check(spam) == "top_2gram"
    assert gopher.duplicate_ngram_char_fraction(words, 5) == pytest.approx(1.0)
    assert gopher.duplicate_ngram_char_fraction(PARAGRAPH.lower().split(), 5) == 0.0
    # a paragraph repeated twice trips the duplicate checks
    twice = PARAGRAPH + "\n\n" + PARAGRAPH
    assert f.failed_check(twice) == "duplicate_lines"
    no_lines = gopher.GopherFilter(max_duplicate_line_fraction=None,
                                   max_duplicate_line_char_fraction=None)
    assert no_lines.failed_check(twice) == "duplicate_paragraphs"


def test_gopher_individual_checks():
    f = gopher.GopherFilter()
    assert f.failed_check("the cat and the dog " * 3) == "word_count"
    words = [f"w{i:03d}" for i in range(60)]
    assert f.failed_check(" ".join(words)) == "stop_words"  # no stop words, 4-char words
    long_words = " ".join(["extraordinarily"] * 2
                          + [f"incomprehensibilit{i}" for i in range(60)])
    assert f.failed_check(long_words) == "mean_word_length"
    hashes = PARAGRAPH + " #tag" * 10
    assert f.failed_check(hashes) == "symbol_ratio"
    bullets = "\n".join(f"- remember to bring the heavy blankets and warm clothes number{i}"
                        for i in range(12))
    assert f.failed_check(bullets) == "bullet_lines"
    ellipsis = "\n".join(f"and then the travellers walked slowly along the road towards "
                         f"the quiet harbour{i}..." for i in range(12))
    assert f.failed_check(ellipsis) == "ellipsis_lines"
    numbers = PARAGRAPH + " " + " ".join(str(i) for i in range(40))
    assert f.failed_check(numbers) == "alpha_words"
    dup_lines = "\n".join([PARAGRAPH[:60]] * 4 + [PARAGRAPH])
    assert f.failed_check(dup_lines) == "duplicate_lines"
    assert gopher.duplicate_fractions(["a", "b", "a", "a"]) == (0.5, 0.5)


def test_gopher_code_mode_keeps_source_code():
    code = "\n".join(f"def handler_{i}(request, ctx):\n    value_{i} = request.get('k{i}')\n"
                     f"    return ctx.render(value_{i}, index={i})\n" for i in range(8))
    nl = gopher.GopherFilter()
    assert nl.failed_check(code) is not None  # natural-language checks reject code
    assert gopher.GopherFilter(code=True).failed_check(code) is None
    # single checks can be switched off with None
    assert gopher.GopherFilter(min_stop_words=None).failed_check(
        " ".join(f"w{i:03d}" for i in range(60))) is None


# -- pii -------------------------------------------------------------------------------------
def redact(text: str, **kw) -> tuple[str, dict[str, int]]:
    return pii.factory(PIIFilterConfig(**kw)).redact(text)


def test_luhn():
    assert pii.luhn_valid("4111111111111111")
    assert not pii.luhn_valid("4111111111111112")
    assert pii.luhn_valid("378282246310005")  # Amex test number, 15 digits
    assert pii.is_card("4111 1111 1111 1111") and not pii.is_card("4111 1111 1111 1112")
    assert not pii.is_card("0000000000000000")  # one repeated digit
    assert not pii.is_card("1700000000004")  # would be Luhn-valid, but no card IIN
    assert pii.luhn_valid("1700000000004")


def test_pii_cards_only_luhn_valid():
    text, counts = redact("pay 4111 1111 1111 1111 or 4111-1111-1111-1112 or 5500000000000004 "
                          "or 3782-822463-10005 now")
    assert text == "pay <CREDIT_CARD> or 4111-1111-1111-1112 or <CREDIT_CARD> or <CREDIT_CARD> now"
    assert counts == {"credit_card": 3}
    # 12 and 20 digit runs are never cards
    assert redact("id 411111111116 and 41111111111111111113")[1] == {}


def test_pii_emails_and_phones():
    text, counts = redact("Write to jane.doe+news@mail.example.co.uk or call +44 20 7946 0958, "
                          "(415) 555-2671 or 415-555-2671.")
    assert text == "Write to <EMAIL> or call <PHONE>, <PHONE> or <PHONE>."
    assert counts == {"email": 1, "phone": 3}
    # dates, versions and plain numbers are not phone numbers
    kept = "On 2021-10-12 we shipped 1.2.10, ticket 12345, total 3.14159."
    assert redact(kept) == (kept, {})


def test_pii_ipv4_not_versions():
    text, counts = redact("hosts 192.168.0.1 and 8.8.8.8. Python 3.11.7, lib 1.2.3.4.5, "
                          "bad 256.1.1.1 and 10.0.0.999")
    assert text == ("hosts <IP_ADDRESS> and <IP_ADDRESS>. Python 3.11.7, lib 1.2.3.4.5, "
                    "bad 256.1.1.1 and 10.0.0.999")
    assert counts == {"ip_address": 2}


@pytest.mark.parametrize("addr", ["2001:0db8:85a3:0000:0000:8a2e:0370:7334", "2001:db8::1",
                                  "fe80::1%eth0", "::ffff:192.0.2.128", "2001:db8:0:0:1::1"])
def test_pii_ipv6_forms(addr):
    assert redact(f"from {addr} today") == ("from <IP_ADDRESS> today", {"ip_address": 1})


def test_pii_keeps_code_that_looks_like_ipv6():
    code = "x = a[::2] + b[1::2]; t = '12:30:45'; mac = 'de:ad:be:ef:00:01'; std::vector"
    assert redact(code) == (code, {})


def test_pii_filter_result_and_toggles():
    f = pii.factory(PIIFilterConfig())
    r = f("mail a@b.com from 10.1.2.3")
    assert r.keep and r.text == "mail <EMAIL> from <IP_ADDRESS>" and r.reason == "redacted"
    assert dict(r.counts) == {"email": 1, "ip_address": 1}
    assert f("nothing here").text is None
    assert redact("mail a@b.com", email=False) == ("mail a@b.com", {})


def test_filters_pickle():
    for f in (length.LengthFilter(), gopher.GopherFilter(code=True), pii.PIIFilter()):
        g = pickle.loads(pickle.dumps(f))
        assert g == f
        assert g(PARAGRAPH).keep


def test_gopher_code_mode_keeps_most_of_the_stdlib():
    import sysconfig
    from pathlib import Path

    stdlib = Path(sysconfig.get_paths()["stdlib"])
    files = sorted((stdlib / "json").glob("*.py")) + sorted((stdlib / "asyncio").glob("*.py"))
    f = gopher.GopherFilter(code=True, min_words=20)
    kept = [p.name for p in files if f(p.read_text(encoding="utf-8")).keep]
    assert len(kept) >= 0.9 * len(files), sorted({p.name for p in files} - set(kept))
