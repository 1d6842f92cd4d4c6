"""The ``pii`` filter: redact e-mails, payment cards, IP addresses, street addresses and phone
numbers in place.

Spans are replaced by ``<EMAIL>``, ``<CREDIT_CARD>``, ``<IP_ADDRESS>``, ``<ADDRESS>`` and
``<PHONE>``, in that order (so the digits of a card are not taken for a phone number). The
result counts replacements per type (``email``, ``credit_card``, ``ip_address``,
``street_address``, ``phone``); the document is always kept.

A dotted quad right after a version word ("version 3.11.2.1", "v 1.2.3.4", "release", "build",
"rev", "firmware", "kernel" ...) is a version number, not an IPv4 address, and is kept.

Street addresses are found by pattern and gazetteer, not by a model: a house number, one to
four capitalised words and a street-type word from :data:`STREET_TYPES` (US/UK/Canadian/
Australian usage: Street, St, Avenue, Rd, Lane, Boulevard, Close, Crescent ...), then an
optional unit (Apt 4B, Suite 200, #12) and an optional ", City, ST 12345" tail; or the German
form "Hauptstraße 12" (a word ending in -straße/-strasse/-weg/-gasse/-allee/-platz/-ring/-damm
and a number). Person names are not detected: that needs a named-entity model, and none that
ships in a package installs here (see docs/plugins/data.md).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lmforge import FilterResult

PLACEHOLDERS = {"email": "<EMAIL>", "credit_card": "<CREDIT_CARD>",
                "ip_address": "<IP_ADDRESS>", "street_address": "<ADDRESS>",
                "phone": "<PHONE>"}

EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9][A-Za-z0-9._%+-]*@[A-Za-z0-9](?:[A-Za-z0-9-]*"
                   r"[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*"
                   r"\.[A-Za-z]{2,24}\b")
# 13-19 digits, either one run or groups separated by single spaces/dashes (4-4-4-x, 4-6-5).
CARD = re.compile(r"(?<![\w.-])(?:\d{13,19}|\d{4}(?:([ -])\d{4}){2}\1\d{1,7}"
                  r"|\d{4}[ -]\d{6}[ -]\d{4,5})(?![\w-]|\.\d)")
_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
IPV4 = re.compile(rf"(?<![\w.]){_OCTET}(?:\.{_OCTET}){{3}}(?![\w]|\.\d)")
# A candidate: hex groups and colons (at least two), optionally an embedded IPv4 tail and a
# zone id; validated with ``ipaddress``.
IPV6 = re.compile(r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{1,4}|"
                  r"\d{1,3}(?:\.\d{1,3}){3})?(?:%[0-9A-Za-z]+)?(?![\w:]|\.\d)")
#: Words after which a dotted quad is a version, not an address ("version 3.11.2.1").
VERSION_BEFORE = re.compile(r"(?:\b(?:version|ver|v|release|rel|build|rev|revision|firmware|"
                            r"kernel|patch|update|python|release-?candidate|rc)\.?\s*[:#=]?\s*"
                            r"|\bv)$", re.IGNORECASE)
#: Street-type words (USPS Publication 28 common suffixes, UK/Commonwealth road names).
STREET_TYPES = (
    "Street", "St", "Avenue", "Ave", "Av", "Road", "Rd", "Boulevard", "Blvd", "Lane", "Ln",
    "Drive", "Dr", "Court", "Ct", "Place", "Pl", "Terrace", "Ter", "Way", "Parkway", "Pkwy",
    "Highway", "Hwy", "Circle", "Cir", "Square", "Sq", "Trail", "Trl", "Crescent", "Cres",
    "Close", "Gardens", "Gdns", "Grove", "Row", "Mews", "Walk", "Alley", "Plaza", "Pike",
    "Expressway", "Expy", "Freeway", "Fwy", "Loop", "Path", "Hill", "Heights", "Hts")
_CAP = r"(?:[A-Z][a-z]+|[A-Z]\.|\d{1,3}(?:st|nd|rd|th))"
STREET = re.compile(
    r"(?<![\w.,-])\d{1,6}[A-Za-z]?(?:-\d{1,4})?\s+"            # house number: 221B, 12-14
    r"(?:(?:N|S|E|W|NE|NW|SE|SW|North|South|East|West)\.?\s+)?"  # direction
    rf"{_CAP}(?:\s+{_CAP}){{0,3}}\s+"                         # the street's name
    rf"(?:{'|'.join(STREET_TYPES)})\b\.?"                      # its type
    r"(?:\s+(?:N|S|E|W|NE|NW|SE|SW)\b)?"                       # 1600 ... Avenue NW
    r"(?:,?\s+(?:Apt|Apartment|Suite|Ste|Unit|Flat|Fl|Floor|#)\.?\s*#?\w{1,5})?"
    r"(?:,\s+[A-Z][a-z]+(?:\s+[A-Z][a-z]+){0,2},?\s+[A-Z]{2}\s+\d{5}(?:-\d{4})?)?")
STRASSE = re.compile(r"\b[A-ZÄÖÜ][a-zäöüß]+(?:-[A-ZÄÖÜ][a-zäöüß]+)*"
                     r"(?:straße|strasse|str\.|weg|gasse|allee|platz|ring|damm)"
                     r"\s+\d{1,4}[a-z]?\b(?:,\s+\d{5}\s+[A-ZÄÖÜ][a-zäöüß]+)?")
#: "in 2019 Main Street ...": a year after a preposition is not a house number.
_YEAR_BEFORE = re.compile(r"\b(?:in|since|by|of|from|until|till|before|after|during|circa|"
                          r"around|c\.)\s+$", re.IGNORECASE)


def _street_ok(m: re.Match[str]) -> bool:
    number = re.match(r"\d+", m.group(0))
    if number and len(number.group(0)) == 4 and 1800 <= int(number.group(0)) <= 2099:
        return not _YEAR_BEFORE.search(m.string, max(0, m.start() - 12), m.start())
    return True


PHONE = re.compile(
    r"(?<![\w.+-])(?:"
    r"\+\d{1,3}(?:[ .-]?\(?\d{1,4}\)?){2,5}"  # international: +CC then 2-5 groups
    r"|(?:\(\d{3}\)[ ]?|\d{3}[ .-])\d{3}[ .-]\d{4}"  # NANP: (555) 123-4567, 555-123-4567
    r")(?![\w-]|\.\d)")


def luhn_valid(digits: str) -> bool:
    """The Luhn checksum used by payment cards (``digits``: only 0-9)."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def is_card(candidate: str, require_iin: bool = True) -> bool:
    digits = re.sub(r"[ -]", "", candidate)
    if not 13 <= len(digits) <= 19 or len(set(digits)) == 1:
        return False
    if require_iin and digits[0] not in "23456":
        return False
    return luhn_valid(digits)


def is_ipv6(candidate: str) -> bool:
    """A real IPv6 address, excluding forms that mostly appear as code (``1::2``, ``::``)."""
    addr = candidate.split("%", 1)[0]
    try:
        ipaddress.IPv6Address(addr)
    except ValueError:
        return False
    groups = [g for g in re.split(r":+", addr) if g]
    return len(groups) >= 3 or (len(groups) == 2 and any(len(g) >= 3 for g in groups))


def _phone_ok(candidate: str) -> bool:
    return 7 <= sum(c.isdigit() for c in candidate) <= 15


@dataclass(frozen=True)
class PIIFilter:
    email: bool = True
    phone: bool = True
    ip_address: bool = True
    credit_card: bool = True
    card_require_iin: bool = True
    street_address: bool = True
    name: str = "pii"

    def redact(self, text: str) -> tuple[str, dict[str, int]]:
        """``text`` with PII replaced, and the number of replacements per type."""
        counts: dict[str, int] = {}
        steps: list[tuple[str, re.Pattern[str], Callable[[Any], bool] | None]] = []
        if self.email:
            steps.append(("email", EMAIL, lambda s: True))
        if self.credit_card:
            steps.append(("credit_card", CARD, lambda s: is_card(s, self.card_require_iin)))
        if self.ip_address:
            steps.append(("ip_address", IPV6, is_ipv6))
            steps.append(("ip_address", IPV4, None))
        if self.street_address:
            steps.append(("street_address", STREET, _street_ok))
            steps.append(("street_address", STRASSE, lambda s: True))
        if self.phone:
            steps.append(("phone", PHONE, _phone_ok))
        for kind, pattern, accept in steps:
            if kind == "email" and "@" not in text:
                continue
            if kind == "ip_address" and pattern is IPV6 and text.count(":") < 2:
                continue

            def sub(m: re.Match[str], kind: str = kind,
                    accept: Callable[[Any], bool] | None = accept) -> str:
                if accept is None:  # IPv4: not right after a version word
                    if VERSION_BEFORE.search(m.string, max(0, m.start() - 24), m.start()):
                        return m.group(0)
                elif not (accept(m) if kind == "street_address" else accept(m.group(0))):
                    return m.group(0)
                counts[kind] = counts.get(kind, 0) + 1
                return PLACEHOLDERS[kind]

            text = pattern.sub(sub, text)
        return text, counts

    def __call__(self, text: str) -> FilterResult:
        new, counts = self.redact(text)
        if not counts:
            return FilterResult.kept()
        return FilterResult(keep=True, reason="redacted", text=new, counts=counts)


def factory(config: Any) -> PIIFilter:
    return PIIFilter(email=config.email, phone=config.phone, ip_address=config.ip_address,
                     credit_card=config.credit_card, card_require_iin=config.card_require_iin,
                     street_address=getattr(config, "street_address", True))
