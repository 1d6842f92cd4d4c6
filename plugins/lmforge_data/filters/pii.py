"""The ``pii`` filter: redact e-mails, payment cards, IP addresses and phone numbers in place.

Spans are replaced by ``<EMAIL>``, ``<CREDIT_CARD>``, ``<IP_ADDRESS>`` and ``<PHONE>``, in that
order (so the digits of a card are not taken for a phone number). The result counts
replacements per type (``email``, ``credit_card``, ``ip_address``, ``phone``); the document is
always kept.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lmforge import FilterResult

PLACEHOLDERS = {"email": "<EMAIL>", "credit_card": "<CREDIT_CARD>",
                "ip_address": "<IP_ADDRESS>", "phone": "<PHONE>"}

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
    name: str = "pii"

    def redact(self, text: str) -> tuple[str, dict[str, int]]:
        """``text`` with PII replaced, and the number of replacements per type."""
        counts: dict[str, int] = {}
        steps: list[tuple[str, re.Pattern[str], Callable[[str], bool]]] = []
        if self.email:
            steps.append(("email", EMAIL, lambda s: True))
        if self.credit_card:
            steps.append(("credit_card", CARD, lambda s: is_card(s, self.card_require_iin)))
        if self.ip_address:
            steps.append(("ip_address", IPV6, is_ipv6))
            steps.append(("ip_address", IPV4, lambda s: True))
        if self.phone:
            steps.append(("phone", PHONE, _phone_ok))
        for kind, pattern, accept in steps:
            if kind == "email" and "@" not in text:
                continue
            if kind == "ip_address" and pattern is IPV6 and text.count(":") < 2:
                continue

            def sub(m: re.Match[str], kind: str = kind,
                    accept: Callable[[str], bool] = accept) -> str:
                if not accept(m.group(0)):
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
                     credit_card=config.credit_card, card_require_iin=config.card_require_iin)
