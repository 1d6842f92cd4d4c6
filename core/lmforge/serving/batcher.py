"""Request batching: concurrent requests gathered for a few milliseconds into one ``generate``.

One worker thread owns the generator. It takes the first waiting request, then keeps taking
requests until ``window_s`` has passed since the first or ``max_rows`` rows (prompt x sample)
are gathered. Requests whose sampling agrees (temperature, top-p, top-k, top log-probs) share
one call: each prompt is repeated ``n`` times as its own row (so ``n`` may differ), every row
gets its own token budget and stop strings (``stop_check``, then trimmed here), and the call
runs for the largest budget. Greedy rows come out as they would alone; sampled rows without a
``seed`` share one random seed per call. A request *with* a ``seed`` runs in a call of its own,
so the same request gives the same completion.
"""

from __future__ import annotations

import collections
import queue
import secrets
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from lmforge.serving.protocol import Choice, Request


@dataclass
class _Job:
    request: Request
    stop_ids: tuple[int, ...]
    future: Future = field(default_factory=Future)
    rows: int = 0


def trim(tokenizer: Any, ids: list[int], stops: Sequence[str]) -> tuple[str, int, bool]:
    """``(text, tokens kept, stopped)``: the decoded ``ids`` cut before the first stop string
    (a stop string is never part of the text); ``tokens kept`` counts the tokens up to and
    including the one that completes the stop string."""
    text = tokenizer.decode(ids)
    hits = [text.find(s) for s in stops if s in text]
    if not hits:
        return text, len(ids), False
    cut = min(hits)
    lo, hi = 1, len(ids)  # smallest k whose decoded prefix already holds a stop string
    while lo < hi:
        mid = (lo + hi) // 2
        prefix = tokenizer.decode(ids[:mid])
        if any(s in prefix for s in stops):
            hi = mid
        else:
            lo = mid + 1
    return text[:cut], lo, True


class Batcher:
    """Runs requests through ``generator`` (a :class:`lmforge.generators.Generator`) on one
    worker thread; :meth:`submit` returns a future of the request's :class:`Choice` list.
    ``calls`` keeps, for the latest calls, how many requests each one served."""

    def __init__(self, generator: Any, tokenizer: Any, *, window_s: float = 0.005,
                 max_rows: int = 64) -> None:
        self.generator, self.tokenizer = generator, tokenizer
        self.window_s, self.max_rows = window_s, max_rows
        self.calls: collections.deque[int] = collections.deque(maxlen=1000)
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="lmforge-serve-batcher",
                                        daemon=True)
        self._thread.start()

    def submit(self, request: Request, stop_ids: tuple[int, ...]) -> Future:
        if self._closed:
            raise RuntimeError("the server is shutting down")
        job = _Job(request, stop_ids, rows=len(request.prompts) * request.n)
        self._queue.put(job)
        return job.future

    def close(self) -> None:
        """Stop the worker after the call it is running; requests still waiting fail with a
        ``RuntimeError`` (their clients get a 500 saying the server is shutting down)."""
        self._closed = True
        self._queue.put(None)
        self._thread.join(timeout=30)
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                return
            if job is not None:
                job.future.set_exception(RuntimeError("the server is shutting down"))

    # -- the worker -------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            jobs, rows = [first], first.rows
            deadline = time.monotonic() + self.window_s
            stop = False
            while rows < self.max_rows:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    job = self._queue.get(timeout=left)
                except queue.Empty:
                    break
                if job is None:
                    stop = True
                    break
                jobs.append(job)
                rows += job.rows
            groups: dict[Any, list[_Job]] = {}
            for job in jobs:
                r = job.request
                key: Any = ((r.temperature, r.top_p, r.top_k, r.logprobs or 0, job.stop_ids)
                            if r.seed is None else id(job))
                groups.setdefault(key, []).append(job)
            for group in groups.values():
                self._call(group)
            if stop:
                return

    def _call(self, jobs: list[_Job]) -> None:
        from lmforge.generation import SamplingParams

        try:
            prompts, budgets, stops = [], [], []
            for job in jobs:
                r = job.request
                for p in r.prompts:
                    for _ in range(r.n):
                        prompts.append(p)
                        budgets.append(r.max_tokens)
                        stops.append(r.stop)
            first = jobs[0].request
            seed = first.seed if first.seed is not None else secrets.randbits(31)
            params = SamplingParams(
                max_new_tokens=max(budgets), temperature=first.temperature, top_p=first.top_p,
                top_k=first.top_k, n=1, stop_ids=jobs[0].stop_ids, seed=seed,
                top_logprobs=first.logprobs or 0)
            tok = self.tokenizer

            def stop_check(row: int, ids: list[int]) -> bool:
                return len(ids) >= budgets[row] or (
                    bool(stops[row]) and any(s in tok.decode(ids) for s in stops[row]))

            self.calls.append(len(jobs))
            completions = self.generator.generate(prompts, params, stop_check=stop_check)
            choices = [self._choice(c, budgets[i], stops[i]) for i, c in enumerate(completions)]
        except BaseException as exc:  # noqa: BLE001 - every waiting request gets the error
            for job in jobs:
                job.future.set_exception(exc)
            return
        at = 0
        for job in jobs:
            job.future.set_result(choices[at:at + job.rows])
            at += job.rows

    def _choice(self, c: Any, budget: int, stops: Sequence[str]) -> Choice:
        ids = c.token_ids[:budget]
        text, keep, stopped = trim(self.tokenizer, ids, stops)
        if stopped:
            reason = "stop"
        elif len(c.token_ids) >= budget:
            reason = "length"
        else:  # a stop token, or the context is full
            reason = "stop" if c.stop_id is not None else "length"
        return Choice(text=text, token_ids=ids[:keep], logprobs=c.logprobs[:keep],
                      top_logprobs=c.top_logprobs[:keep], finish_reason=reason)
