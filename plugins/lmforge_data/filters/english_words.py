"""English word splitting as spaCy's rule-based English tokenizer does it, without spaCy.

The Gopher statistics (word counts, share of words with a letter, stop words, n-grams) depend on
what a "word" is. Datatrove — the reference implementation most corpora are filtered with — uses
``spacy.blank("en")``'s tokenizer, in which punctuation is split off into tokens of its own. This
module reproduces that tokenizer's algorithm closely enough for those statistics:

1. split the text on whitespace (whitespace runs are dropped, as datatrove strips them);
2. for each chunk, unless it is a special case, repeatedly strip one *prefix* (opening
   punctuation, quotes, currency signs, symbols, ``=``, ``%``, dashes) and one *suffix*
   (closing punctuation, quotes, ``'s``, units and currency after a number, a period after a
   lower-case letter, a digit, punctuation or two capitals), stopping as soon as the rest is a
   special case;
3. split what remains on *infixes*: ellipses, symbols, ``.`` between a lower-case letter and a
   capital, ``,`` between letters, hyphens and ``:<>=/`` between a letter or digit and a letter,
   and ``+-*^`` between digits — unless it looks like a URL or an e-mail address;
4. special cases: English contractions (``don't`` -> ``do`` ``n't``, ``I'm`` -> ``I`` ``'m``,
   ``cannot`` -> ``can`` ``not``, with or without the apostrophe), common dotted abbreviations
   (``e.g.``, ``Mr.``, ``Jan.``, ``a.``-``z.``), emoticons and ``C++``; a special case that
   the affix rules cut apart (``"(main):"`` -> ``(`` ``main`` ``)`` ``:``) is put back
   together (``):``), as spaCy's special-case matcher does.

The rule set is written here from spaCy's rules (v3.8 English defaults) and checked against its
tokenizer (``tests/data/test_filters.py`` where spaCy is installed), not copied; where it is smaller (spaCy lists ~1300 special cases, mostly rarer abbreviations and
emoticons) the token counts differ by one on the affected chunk. Chunks repeat a lot in real
text, so results are memoised per chunk.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

__all__ = ["split_words"]


# -- character classes ---------------------------------------------------------------------------
def _char_class(pred, top: int) -> str:
    """A regex character class body for the code points ``< top`` where ``pred`` holds."""
    ranges: list[tuple[int, int]] = []
    for cp in range(top):
        if pred(chr(cp)):
            if ranges and ranges[-1][1] == cp - 1:
                ranges[-1] = (ranges[-1][0], cp)
            else:
                ranges.append((cp, cp))
    return "".join(re.escape(chr(a)) if a == b else f"{re.escape(chr(a))}-{re.escape(chr(b))}"
                   for a, b in ranges)


_LOWER = _char_class(str.islower, 0x0530) + "ａ-ｚ"  # Latin, Greek, Cyrillic (+ full-width)
_UPPER = _char_class(str.isupper, 0x0530) + "Ａ-Ｚ"
_ALPHA = r"[^\W\d_]"  # any letter
_ALNUM = r"[^\W_]"  # any letter or digit
_SYMBOLS = _char_class(lambda c: unicodedata.category(c) == "So", 0x1FB00)

_PUNCT = ["…", ",", ":", ";", "!", "?", "¿", "؟", "¡", "(", ")", "[", "]", "{", "}", "<", ">",
          "_", "#", "*", "&", "。", "？", "！", "，", "、", "；", "：", "～", "·", "।", "،", "۔",
          "؛", "٪"]
_QUOTES = ["'", '"', "”", "“", "`", "‘", "´", "’", "‚", "„", "»", "«", "「", "」", "『", "』",
           "（", "）", "〔", "〕", "【", "】", "《", "》", "〈", "〉", "⟦", "⟧"]
_CURRENCY = ["US$", "C$", "A$", "$", "£", "€", "¥", "฿", "₽", "﷼"] + [
    chr(c) for c in range(0x20A0, 0x20C0)]
_UNITS = ("km² km³ km m² m³ m dm² dm³ dm cm² cm³ cm mm² mm³ mm ha µm nm yd in ft kg g mg µg t "
          "lb oz m/s km/h kmh mph hPa Pa mbar mb MB kb KB gb GB tb TB T G M K %").split()


def _alt(items: list[str]) -> str:
    return "|".join(re.escape(i) for i in items)


_PUNCT_QUOTES = _alt(_PUNCT + _QUOTES)
_PREFIX = re.compile(
    "^(?:" + "|".join([
        "§", "%", "=", "—", "–", r"\+(?![0-9])", r"\.\.+", _PUNCT_QUOTES,
        _alt(_CURRENCY), f"[{_SYMBOLS}]"]) + ")")
_SUFFIX = re.compile(
    "(?:" + "|".join([
        r"\.\.+", _PUNCT_QUOTES, f"[{_SYMBOLS}]", "'s", "'S", "’s", "’S", "—", "–",
        r"(?<=[0-9])\+", r"(?<=°[FfCcKk])\.",
        f"(?<=[0-9])(?:{_alt(_CURRENCY)})",
        f"(?<=[0-9])(?:{_alt(sorted(_UNITS, key=len, reverse=True))})",
        f"(?<=[0-9{_LOWER}%²\\-+{re.escape(''.join(_PUNCT + _QUOTES))}|])\\.",
        f"(?<=[{_UPPER}][{_UPPER}])\\.",
    ]) + ")$")
_INFIX = re.compile("|".join([
    r"\.\.+", "…", f"[{_SYMBOLS}]",
    r"(?<=[0-9])[+\-*^](?=[0-9-])",
    f"(?<=[{_LOWER}{re.escape(''.join(_QUOTES))}])\\.(?=[{_UPPER}{re.escape(''.join(_QUOTES))}])",
    f"(?<={_ALPHA}),(?={_ALPHA})",
    f"(?<={_ALNUM})(?:-|–|—|--|---|——|~)(?={_ALPHA})",
    f"(?<={_ALNUM})[:<>=/](?={_ALPHA})",
]))
# URLs and e-mail addresses are kept whole (after prefixes and suffixes are stripped): an
# optional scheme and user, then a public IPv4 address or host names ending in a lower-case
# top-level domain, an optional port and path.
_HOST_CHAR = "A-Za-z0-9\u00a1-\uffff"
_URL = re.compile(
    r"^(?:[\w+\-.]{2,}://)?(?:\S+(?::\S*)?@)?(?:"
    r"(?!(?:10|127)(?:\.\d{1,3}){3})(?!(?:169\.254|192\.168)(?:\.\d{1,3}){2})"
    r"(?!172\.(?:1[6-9]|2\d|3[01])(?:\.\d{1,3}){2})"
    r"(?:[1-9]\d?|1\d\d|2[01]\d|22[0-3])(?:\.(?:1?\d{1,2}|2[0-4]\d|25[0-5])){2}"
    r"\.(?:[1-9]\d?|1\d\d|2[0-4]\d|25[0-4])"
    f"|(?:(?:[{_HOST_CHAR}][{_HOST_CHAR}_-]{{0,62}})?[{_HOST_CHAR}]\\.)+[{_LOWER}]{{2,63}})"
    r"(?::\d{2,5})?(?:[/?#]\S*)?$")


# -- special cases -------------------------------------------------------------------------------
_ENGLISH_WORDS = frozenset("ill shell well its hell shed were whore lets".split())


def _special_cases() -> dict[str, tuple[str, ...]]:
    special: dict[str, tuple[str, ...]] = {}

    def add(word: str, parts: tuple[str, ...]) -> None:
        for variant, vparts in ((word, parts), (word.capitalize(),
                                                (parts[0].capitalize(),) + parts[1:])):
            for apo in ("'", "’", ""):
                key = variant.replace("'", apo)
                if not apo and key.lower() in _ENGLISH_WORDS:
                    continue  # "its", "well", "shell" ... without an apostrophe are words
                if key not in special:
                    special[key] = tuple(p.replace("'", apo) for p in vparts)

    pronoun_verbs = {
        "i": ("'m", "'d", "'ll", "'ve"), "you": ("'re", "'d", "'ll", "'ve"),
        "he": ("'s", "'d", "'ll"), "she": ("'s", "'d", "'ll"), "it": ("'s", "'d", "'ll"),
        "we": ("'re", "'d", "'ll", "'ve"), "they": ("'re", "'d", "'ll", "'ve"),
        "that": ("'s", "'d", "'ll"), "this": ("'s", "'d", "'ll"),
        "these": ("'re", "'d", "'ll", "'ve"), "those": ("'re", "'d", "'ll", "'ve"),
        "there": ("'s", "'re", "'d", "'ll", "'ve"),
    }
    for wh in ("who", "what", "when", "where", "why", "how"):
        pronoun_verbs[wh] = ("'s", "'re", "'d", "'ll", "'ve")
    for pron, verbs in pronoun_verbs.items():
        for v in verbs:
            add(pron + v, (pron, v))
    negatable = ("do does did is are was were has have had could should would must might need "
                 "may dare ought").split()
    for verb in negatable:
        add(verb + "n't", (verb, "n't"))
    for short, verb in (("ca", "can"), ("wo", "will"), ("sha", "shall"), ("ai", "ai")):
        add(short + "n't", (short, "n't"))
    for modal in ("could", "should", "would", "must", "might"):
        add(modal + "'ve", (modal, "'ve"))
    for word, parts in (("cannot", ("can", "not")), ("gonna", ("gon", "na")),
                        ("gotta", ("got", "ta")), ("let's", ("let", "'s")),
                        ("y'all", ("y'", "all"))):
        add(word, parts)
    for word in ("ma'am", "o'clock", "'cause", "'em", "'bout", "'s", "'S", "'d", "'ll", "'re"):
        for apo in ("'", "’"):
            special[word.replace("'", apo)] = (word.replace("'", apo),)
    special["‘s"], special["‘S"] = ("‘s",), ("‘S",)
    # dotted abbreviations kept whole
    abbrevs = ("e.g. i.e. a.m. p.m. vs. v.s. co. E.g. E.G. I.e. I.E. Mr. Mrs. Ms. Dr. Prof. St. "
               "Jr. Mt. Rev. Gen. Gov. Rep. Sen. Adm. Messrs. Ph.D. Inc. Ltd. Co. Corp. Bros. "
               "Jan. Feb. Mar. Apr. Jun. Jul. Aug. Sep. Sept. Oct. Nov. Dec. D.C. N.Y. N.J. "
               "Calif. Mass. Wash. Fla. Pa. Va. Conn. Ill. Mich. Minn. Id.").split()
    for a in abbrevs:
        special[a] = (a,)
    for c in "abcdefghijklmnopqrstuvwxyzäöü":
        special[c + "."] = (c + ".",)
    for hour in range(1, 13):
        special[f"{hour}a.m."] = (str(hour), "a.m.")
        special[f"{hour}p.m."] = (str(hour), "p.m.")
        special[f"{hour}am"] = (str(hour), "am")
        special[f"{hour}pm"] = (str(hour), "pm")
    emoticons = (
        ":) :-) :)) :-)) :))) :-))) :( :-( :(( :-(( :((( :-((( :D :-D :P :-P :p :-p ;) ;-) "
        ";D ;-D :/ :-/ :| :-| :o :O :-o :-O :0 :-0 :3 :-3 :] :-] :> :-> :} :-} :* :-* :x :X "
        ":-x :-X :1 :() :o) <3 <33 <333 </3 =) =( =D =] =[ =| =/ =3 ): )-: (: (-: (; (-; (= "
        "]= [: [-: [= 8) 8-) 8D 8-D XD XDD xD xDD ^_^ ^__^ ^___^ -_- -__- o.O O.o o.o O.O o_O "
        "O_o o_o O_O 0_0 0_o o_0 0.0 0.o o.0 >.< >.> <.< @_@ v.v V.V v_v V_V ;_; ._. (._.) "
        ":'( :') :'-( :'-) >:( >:o (^_^) (-_-) (>_<) (*_*) (-8 \\n \\t \\\")")
    for token in (emoticons + " C++ and/or w/o ' '' ’ ’’ —").split():
        special[token] = (token,)
    return special


_SPECIAL = _special_cases()


def _tokenize(chunk: str, special: dict[str, tuple[str, ...]]) -> list[str]:
    """Tokens of one whitespace-free chunk: spaCy's affix loop, then infixes."""
    if chunk in special:
        return list(special[chunk])
    prefixes: list[str] = []
    suffixes: list[str] = []
    rest = chunk
    last = -1
    while rest and len(rest) != last:
        if rest in special:
            break
        last = len(rest)
        pre = _PREFIX.search(rest)
        pre_len = pre.end() if pre else 0
        if pre_len:
            minus_pre = rest[pre_len:]
            if minus_pre and minus_pre in special:
                prefixes.append(rest[:pre_len])
                rest = minus_pre
                break
        suf = _SUFFIX.search(rest[pre_len:])
        suf_len = (suf.end() - suf.start()) if suf else 0
        if suf_len:
            minus_suf = rest[:-suf_len]
            if minus_suf and minus_suf in special:
                suffixes.append(rest[-suf_len:])
                rest = minus_suf
                break
        if pre_len and suf_len and pre_len + suf_len <= len(rest):
            prefixes.append(rest[:pre_len])
            suffixes.append(rest[-suf_len:])
            rest = rest[pre_len:-suf_len]
        elif pre_len:
            prefixes.append(rest[:pre_len])
            rest = rest[pre_len:]
        elif suf_len:
            suffixes.append(rest[-suf_len:])
            rest = rest[:-suf_len]
        if rest in special:
            break
    tokens = prefixes
    if rest:
        if rest in special:
            tokens.extend(special[rest])
        elif _URL.match(rest):
            tokens.append(rest)
        else:
            start = 0
            for m in _INFIX.finditer(rest):
                a, b = m.start(), m.end()
                if a == 0:
                    continue  # an infix at the very start is not split off
                if a != start:
                    tokens.append(rest[start:a])
                if a != b:
                    tokens.append(rest[a:b])
                start = b
            if rest[start:]:
                tokens.append(rest[start:])
    tokens.extend(reversed(suffixes))
    return tokens


# Special cases made of pieces the affix rules split apart ("):" is ")" then ":") are put
# back together after splitting, as spaCy's special-case matcher does: token run -> special.
_MERGE: dict[tuple[str, ...], str] = {}
for _key in _SPECIAL:
    _parts = tuple(_tokenize(_key, {}))
    if len(_parts) > 1:
        _MERGE[_parts] = _key
_MERGE_MAX = max(map(len, _MERGE))


@lru_cache(maxsize=1 << 17)
def _split_chunk(chunk: str) -> tuple[str, ...]:
    tokens = _tokenize(chunk, _SPECIAL)
    if len(tokens) < 2:
        return tuple(tokens)
    out: list[str] = []
    i, n = 0, len(tokens)
    while i < n:
        for size in range(min(_MERGE_MAX, n - i), 1, -1):
            key = _MERGE.get(tuple(tokens[i:i + size]))
            if key is not None:
                out.extend(_SPECIAL[key])
                i += size
                break
        else:
            out.append(tokens[i])
            i += 1
    return tuple(out)


def split_words(text: str) -> list[str]:
    """The words of ``text`` as datatrove's English ``split_into_words`` returns them."""
    out: list[str] = []
    extend = out.extend
    for chunk in text.split():
        if chunk.isalpha() and chunk not in _SPECIAL:
            out.append(chunk)
        else:
            extend(_split_chunk(chunk))
    return out
