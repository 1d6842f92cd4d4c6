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
def test_english_words_split_punctuation_like_spacy():
    from lmforge_data.filters.english_words import split_words

    # 60 words, 3 periods and 2 commas (hand-counted)
    words = split_words(PARAGRAPH)
    assert len(words) == 65 and [w for w in words if not w.isalpha()] == [".", ",", ",", ".", "."]
    assert split_words("(see e.g. Mr. Smith's page), don't stop") == [
        "(", "see", "e.g.", "Mr.", "Smith", "'s", "page", ")", ",", "do", "n't", "stop"]
    assert split_words("don't--x") == ["don't", "--", "x"]  # infix pieces are not special
    assert split_words("BSD-3-clause x86-64 a/b 1.5 3.11.7 #include <stdio.h>") == [
        "BSD-3", "-", "clause", "x86", "-", "64", "a", "/", "b", "1.5", "3.11.7", "#",
        "include", "<", "stdio.h", ">"]
    assert split_words("(main): http://example.org/a?b=1. cannot 10km") == [
        "(", "main", "):", "http://example.org/a?b=1", ".", "can", "not", "10", "km"]


def test_gopher_keeps_a_normal_paragraph():
    f = gopher.factory(GopherFilterConfig())
    assert f.failed_check(PARAGRAPH) is None
    assert f(PARAGRAPH).keep


def test_gopher_drops_repetitive_text():
    from lmforge_data.filters.english_words import split_words

    f = gopher.factory(GopherFilterConfig())
    spam = "buy cheap pills now " * 30  # 600 characters, 120 words
    assert f(spam).keep is False
    words = split_words(spam)
    # the first of the four 2-grams seen 30 times: "buy cheap", 9 characters
    assert gopher.top_ngram_chars(words, 2) == 9 * 30
    # 5-grams repeat every 4 words: from word 4 on, one repeat every 5 positions (the scan
    # skips 5 words after each), 23 repeats cycling through 19, 21, 21, 19 characters
    assert gopher.duplicate_ngram_chars(words, 5) == 6 * 19 + 6 * 21 + 6 * 21 + 5 * 19
    assert gopher.duplicate_ngram_chars(split_words(PARAGRAPH), 5) == 0
    assert f.failed_check(spam) == "stop_words"  # quality checks come before n-grams
    assert gopher.GopherFilter(code=True).failed_check(spam) == "top_2gram"  # 270/600 > 0.2
    # a paragraph repeated twice trips the paragraph checks, then the line checks
    twice = PARAGRAPH + "\n\n" + PARAGRAPH
    assert f.failed_check(twice) == "duplicate_paragraphs"
    no_paragraphs = gopher.GopherFilter(max_duplicate_paragraph_fraction=None,
                                        max_duplicate_paragraph_char_fraction=None)
    assert no_paragraphs.failed_check(twice) == "duplicate_lines"
    # 1 of 10 lines repeats (under 0.3), but it holds over a fifth of the characters
    long_dup = "\n".join([PARAGRAPH, PARAGRAPH] + [f"short line {i}" for i in range(8)])
    assert f.failed_check(long_dup) == "duplicate_line_chars"
    assert gopher.duplicate_parts(["a", "b", "a", "a"]) == (2, 2)


def test_gopher_individual_checks():
    f = gopher.GopherFilter()
    assert f.failed_check("") == "empty"
    # punctuation tokens are words for the ratios but not for the word count
    assert f.failed_check(" - ".join(f"item{i:02d}" for i in range(49))) == "word_count"
    assert f.failed_check(" - ".join(f"item{i:02d}" for i in range(50))) == "alpha_words"
    words = [f"w{i:03d}" for i in range(60)]
    assert f.failed_check(" ".join(words)) == "stop_words"  # no stop words, 4-char words
    assert f.failed_check(" ".join(words + ["The", "And"])) == "stop_words"  # case-sensitive
    assert f.failed_check(" ".join(words + ["the", "and"])) is None
    long_words = " ".join(["extraordinarily"] * 2
                          + [f"incomprehensibilit{i}" for i in range(60)])
    assert f.failed_check(long_words) == "mean_word_length"
    # PARAGRAPH is 65 words; "#tag" is 2 more: 10 hashes / 85 words > 0.1
    assert f.failed_check(PARAGRAPH + " #tag" * 10) == "symbol_ratio"
    # ellipses count on their own: 8 / 81 words passes (then 1 line of 1 ends in "..."),
    # 9 / 83 does not
    assert f.failed_check(PARAGRAPH + " wait..." * 8) == "ellipsis_lines"
    assert f.failed_check(PARAGRAPH + " wait..." * 9) == "symbol_ratio"
    bullets = "\n".join(f"- remember to bring the heavy blankets and warm clothes number{i}"
                        for i in range(12))
    assert f.failed_check(bullets) == "bullet_lines"
    assert f.failed_check(bullets.replace("- ", "* ")) != "bullet_lines"  # only • and -
    ellipsis = "\n".join(f"and then the travellers walked slowly along the road towards "
                         f"the quiet harbour{i}..." for i in range(12))
    assert f.failed_check(ellipsis) == "ellipsis_lines"
    # 60 alphabetic words of 65; with k numbers 60 / (65 + k) must stay >= 0.8: k <= 10
    assert f.failed_check(PARAGRAPH + " " + " ".join(str(i) for i in range(10))) is None
    assert f.failed_check(PARAGRAPH + " " + " ".join(str(i) for i in range(11))) == "alpha_words"
    dup_lines = "\n".join([PARAGRAPH[:60]] * 4 + [PARAGRAPH])
    assert f.failed_check(dup_lines) == "duplicate_lines"


def test_gopher_code_mode_keeps_source_code():
    code = "\n".join(f"def handler_{i}(request, ctx):\n    value_{i} = request.get('k{i}')\n"
                     f"    return ctx.render(value_{i}, index={i})\n" for i in range(8))
    nl = gopher.GopherFilter()
    assert nl.failed_check(code) is not None  # natural-language checks reject code
    assert gopher.GopherFilter(code=True).failed_check(code) is None
    # single checks can be switched off with None
    assert gopher.GopherFilter(min_stop_words=None).failed_check(
        " ".join(f"w{i:03d}" for i in range(60))) is None


def _parity_documents() -> list[str]:
    """Short documents near each threshold, and real prose: the stdlib's module docstrings."""
    import ast
    import sysconfig
    from pathlib import Path

    docs = [PARAGRAPH, PARAGRAPH + "\n\n" + PARAGRAPH, "buy cheap pills now " * 30,
            " ".join(f"w{i:03d}" for i in range(60)) + " The And"]
    docs += [PARAGRAPH + " " + " ".join(str(i) for i in range(k)) for k in (9, 10, 11, 12)]
    docs += [PARAGRAPH + " wait..." * k for k in (7, 8, 9)]
    docs += [PARAGRAPH + " #tag" * k for k in (7, 8, 9, 10)]
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for path in sorted(stdlib.glob("*.py"))[:120]:
        try:
            doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
        except (SyntaxError, UnicodeDecodeError):
            continue
        if doc:
            docs.append(doc)
    return docs


def test_gopher_decides_as_datatrove():
    """Same keep/drop as datatrove's GopherRepetitionFilter + GopherQualityFilter (spaCy
    words), on documents at the thresholds and on real prose. Runs where datatrove is
    installed (the ``bench`` extra)."""
    pytest.importorskip("spacy")
    dt_filters = pytest.importorskip("datatrove.pipeline.filters")
    from datatrove.data import Document
    from datatrove.utils.text import split_into_words

    from lmforge_data.filters.english_words import split_words

    peers = (dt_filters.GopherRepetitionFilter(), dt_filters.GopherQualityFilter())

    def peer_keeps(text: str) -> bool:
        for flt in peers:
            verdict = flt.filter(Document(text=text, id="0"))
            if verdict is not True and not verdict[0]:
                return False
        return True

    docs = _parity_documents()
    assert len(docs) > 60
    ours = gopher.GopherFilter()
    differ = [d[:80] for d in docs if ours(d).keep != peer_keeps(d)]
    assert not differ, differ
    assert 0 < sum(ours(d).keep for d in docs) < len(docs)  # both outcomes are exercised
    same_words = sum(split_words(d) == split_into_words(d, "en") for d in docs)
    assert same_words >= 0.97 * len(docs), same_words


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
