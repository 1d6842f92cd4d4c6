"""The rating page in headless chromium (Playwright): a vote by keyboard and by mouse, a note,
a server killed with SIGKILL and started again, two raters at once."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from lmforge_rating.votes import load_pairs, read_votes

REPO = Path(__file__).resolve().parents[2]


def _chromium() -> str | None:
    for name in (os.environ.get("LMFORGE_CHROMIUM"), "/usr/lib/chromium/chromium", "chromium",
                 "chromium-browser"):
        if name and (path := shutil.which(name) or (Path(name).is_file() and name)):
            return str(path)
    return None


def _browser_or_skip() -> str:
    """In CI (CI=true) a missing browser or playwright fails; elsewhere the test is skipped."""
    ci = os.environ.get("CI", "").lower() == "true"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        if ci:
            pytest.fail("playwright is not installed (the test extra of pyproject.toml)")
        pytest.skip("playwright is not installed: pip install -e '.[test]'")
    chromium = _chromium()
    if chromium is None:
        if ci:
            pytest.fail("chromium is not installed: scripts/setup.sh installs it with apt-get")
        pytest.skip("chromium is not installed (sudo apt-get install chromium)")
    return chromium


class Server:
    """``lmforge rate`` in a child process, on a free port."""

    def __init__(self, pairs: Path, votes: Path, *extra: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "lmforge.cli", "rate", str(pairs), "--votes", str(votes),
             "--port", "0", *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            cwd=REPO)
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            found = re.search(r"Open (http://\S+/)", line)
            if found:
                self.url = found.group(1)
                return
        raise AssertionError(f"the server did not start: {self.proc.stderr.read()}")

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()


def _pairs(path: Path, n: int) -> Path:
    path.write_text("".join(json.dumps({
        "id": f"p{k}", "prompt": [{"role": "user", "content": f"What is {k} + {k}?"}],
        "response_a": f"It is {2 * k}.", "response_b": f"Maybe {2 * k + 1}?"}) + "\n"
        for k in range(n)))
    return path


def _choice(votes: Path, rater: str, item: str) -> tuple[str, str, str]:
    for v in read_votes(votes):
        if v.rater == rater and v.item == item:
            return v.choice, v.shown, v.note
    raise AssertionError(f"no vote of {rater} on {item}")


def _left_is_a(page: Any, pairs: dict[str, Any], item: str) -> bool:
    return page.locator("#left").inner_text() == pairs[item].response_a


def _current(page: Any) -> str:
    text = page.locator("#prompt").inner_text()
    return "p" + re.search(r"What is (\d+)", text).group(1)


@pytest.mark.slow
def test_rating_page_in_headless_chromium(tmp_path: Path) -> None:
    chromium = _browser_or_skip()
    from playwright.sync_api import expect, sync_playwright

    pairs_path = _pairs(tmp_path / "pairs.jsonl", 6)
    pairs = {p.id: p for p in load_pairs(pairs_path)}
    votes = tmp_path / "votes.jsonl"
    server = Server(pairs_path, votes)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"],
                                        timeout=120_000)
            try:
                page = browser.new_page()
                page.set_default_timeout(60_000)
                errors: list[str] = []
                page.on("pageerror", lambda exc: errors.append(str(exc)))

                # the rater gives an id in a labelled form
                page.goto(server.url)
                page.get_by_label("Your rater id").fill("ana")
                page.get_by_role("button", name="Start rating").click()
                expect(page.locator("#rater-name")).to_have_text("ana")
                expect(page.locator("#prompt")).to_contain_text("What is 0 + 0?")
                # focus is on the item's heading, for screen readers
                assert page.evaluate("document.activeElement.id") == "item-heading"

                # 1) keyboard: "1" chooses the left response, Enter submits
                item = _current(page)
                left_a = _left_is_a(page, pairs, item)
                page.keyboard.press("1")
                expect(page.get_by_role("button", name="A is better")).to_have_attribute(
                    "aria-pressed", "true")
                page.keyboard.press("Enter")
                expect(page.locator("#status")).to_have_text("Saved.")
                expect(page.locator("#prompt")).to_contain_text("What is 1 + 1?")
                assert _choice(votes, "ana", item)[:2] == ("a" if left_a else "b",
                                                          "ab" if left_a else "ba")

                # 2) mouse: click "B is better", then Submit
                item = _current(page)
                left_a = _left_is_a(page, pairs, item)
                page.get_by_role("button", name="B is better").click()
                page.get_by_role("button", name="Submit").click()
                expect(page.locator("#prompt")).to_contain_text("What is 2 + 2?")
                assert _choice(votes, "ana", item)[0] == ("b" if left_a else "a")

                # 3) a note: Enter without a choice says what is missing; T then N, Enter
                item = _current(page)
                page.keyboard.press("n")
                page.keyboard.type("both fine")
                page.keyboard.press("Enter")
                expect(page.locator("#status")).to_contain_text("Choose A, B, tie or skip")
                page.get_by_role("button", name="Tie").click()
                page.get_by_label("Note (optional)").press("Enter")
                expect(page.locator("#prompt")).to_contain_text("What is 3 + 3?")
                assert _choice(votes, "ana", item) == ("tie", _choice(votes, "ana", item)[1],
                                                       "both fine")
                assert len(read_votes(votes)) == 3

                # 4) the server is killed (SIGKILL) and started again: nothing lost, ana
                # continues with the next item
                server.kill()
                server = Server(pairs_path, votes)
                page.goto(server.url + "?rater=ana")
                expect(page.locator("#prompt")).to_contain_text("What is 3 + 3?")
                expect(page.locator("#progress")).to_contain_text("3 answered by you")
                assert [v.item for v in read_votes(votes)] == ["p0", "p1", "p2"]

                # 5) a second rater in another browser context at the same time: with one
                # rating per item, bo is given an item ana is not looking at
                other = browser.new_context().new_page()
                other.set_default_timeout(60_000)
                other.goto(server.url + "?rater=bo")
                expect(other.locator("#prompt")).to_contain_text("What is 4 + 4?")
                other.keyboard.press("s")  # skip
                other.keyboard.press("Enter")
                expect(other.locator("#prompt")).to_contain_text("What is 5 + 5?")
                page.keyboard.press("2")
                page.keyboard.press("Enter")
                expect(page.locator("#prompt")).to_contain_text("What is 4 + 4?")  # bo skipped
                other.keyboard.press("3")
                other.keyboard.press("Enter")
                expect(other.locator("#finished-heading")).to_be_visible()
                got = {(v.rater, v.item, v.choice) for v in read_votes(votes)}
                assert ("bo", "p4", "skip") in got and ("bo", "p5", "tie") in got
                assert ("ana", "p3", _choice(votes, "ana", "p3")[0]) in got
                assert errors == []
            finally:
                browser.close()
    finally:
        server.stop()
