"""``lmforge rate``: the command line (added through the ``lmforge_commands`` hook)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

EPILOG = """\
examples:
  lmforge rate pairs.jsonl                      serve the page on http://127.0.0.1:8765/
  lmforge rate pairs.jsonl --ratings-per-item 3 three raters per pair
  lmforge rate runs/x/arena/outputs/report/pairs.jsonl --votes votes/arena.jsonl
  lmforge rate pairs.jsonl --report             agreement between raters
  lmforge rate runs/x/arena/outputs/report/pairs.jsonl --votes votes/arena.jsonl --report \
      --judge runs/x/arena/outputs/report/verdicts.jsonl

pairs: JSON Lines, one object per pair: {"id": ..., "prompt": "..." or [{"role", "content"}],
"response_a": "...", "response_b": "...", "gold": "a" | "b" (optional)}; or a
dataset/preference artifact folder (chosen is response_a, gold "a").

Raters open the page, enter their id, and answer with the mouse or the keyboard: 1 or A (left
better), 2 or B (right better), 3 or T (tie), 0 or S (skip), N (write a note), Enter (submit).
Each rater gets the pairs they have not answered yet, in random left/right order. Every answer
is on disk (appended, flushed, fsync'ed) before the page moves on: stop the server at any
time, start it again with the same files, and everyone continues where they stopped.
Use the votes as data with the 'human-preferences' source of a curate stage, or in
evaluate/arena (votes:).
"""


def setup(parser: argparse.ArgumentParser) -> Any:
    parser.add_argument("pairs", type=Path, help="the pairs to rate (JSONL, or a "
                        "dataset/preference folder)")
    parser.add_argument("--votes", type=Path, help="the vote log to append to (JSONL; created "
                        "if missing). Default: PAIRS with .votes.jsonl in place of its suffix")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default "
                        "127.0.0.1: this machine only; 0.0.0.0 for others, no authentication)")
    parser.add_argument("--port", type=int, default=8765, help="port (default 8765; 0: any "
                        "free port, printed at start)")
    parser.add_argument("--ratings-per-item", type=int, default=1, metavar="N",
                        help="how many raters should answer each pair (default 1); skips do "
                        "not count")
    parser.add_argument("--seed", type=int, default=0, help="seed of the left/right order")
    parser.add_argument("--report", action="store_true", help="print agreement between raters "
                        "(Fleiss' and Cohen's kappa, raw agreement), with gold labels and with "
                        "--judge's labels, instead of serving")
    parser.add_argument("--judge", type=Path, metavar="LABELS", help="with --report: a "
                        "judge's labels (JSONL of {id, p_a} or {id, label}), e.g. an arena's "
                        "verdicts.jsonl")
    parser.add_argument("--json", action="store_true", help="with --report: print JSON")
    return run


def default_votes_path(pairs: Path) -> Path:
    pairs = Path(pairs)
    if pairs.is_dir():
        return pairs.parent / f"{pairs.name}.votes.jsonl"
    return pairs.with_suffix(".votes.jsonl")


def run(args: argparse.Namespace, plugins: Any) -> int:
    from lmforge_rating.votes import load_pairs

    pairs = load_pairs(args.pairs)
    votes_path = args.votes or default_votes_path(args.pairs)
    if (Path(votes_path).resolve().parent / "artifact.json").is_file():
        print(f"error: {votes_path} would be inside a stage's output folder; a file added "
              f"there makes `lmforge run` run that stage again. Give --votes a path outside "
              f"the run folder, e.g. --votes votes/{Path(args.pairs).stem}.jsonl",
              file=sys.stderr)
        return 2
    if args.report:
        return _report(args, pairs, votes_path)
    if args.ratings_per_item < 1:
        print("error: --ratings-per-item must be at least 1", file=sys.stderr)
        return 2
    return _serve(args, pairs, votes_path)


def _serve(args: argparse.Namespace, pairs: list[Any], votes_path: Path) -> int:
    import warnings

    from lmforge_rating.server import make_server
    from lmforge_rating.session import RatingSession

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        session = RatingSession(pairs, votes_path, ratings_per_item=args.ratings_per_item,
                                seed=args.seed)
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    try:
        server = make_server(session, args.host, args.port)
    except OSError as exc:
        session.close()
        print(f"error: cannot listen on {args.host}:{args.port}: {exc} (another --port?)",
              file=sys.stderr)
        return 2
    host, port = server.server_address[:2]
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
    raters = len({v.rater for v in session.log.votes})
    print(f"lmforge rate: {len(pairs)} pairs from {args.pairs}; answers go to {votes_path} "
          f"({len(session.log.votes)} already, from {raters} raters)")
    if session.unknown_items:
        print(f"warning: {session.unknown_items} answers in {votes_path} are about items not in "
              f"{args.pairs}; they are kept but not used", file=sys.stderr)
    print(f"Open http://{shown}:{port}/ in a browser (Ctrl-C stops; answers are saved as "
          f"they are given)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        session.close()
    print(f"stopped: {len(session.log.votes)} answers in {votes_path}")
    return 0


def _report(args: argparse.Namespace, pairs: list[Any], votes_path: Path) -> int:
    from lmforge_rating.agreement import agreement_report
    from lmforge_rating.labels import human_labels, read_judge_labels
    from lmforge_rating.votes import read_votes

    if not Path(votes_path).exists():
        print(f"error: no vote log at {votes_path} (give --votes)", file=sys.stderr)
        return 2
    ids = {p.id for p in pairs}
    labels = {i: by for i, by in human_labels(read_votes(votes_path)).items() if i in ids}
    gold = {p.id: p.gold for p in pairs if p.gold is not None} or None
    judge = read_judge_labels(args.judge) if args.judge else None
    report = agreement_report(labels, judge=judge, gold=gold)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(format_report(report))
    return 0


def _num(x: Any) -> str:
    return "—" if x is None else f"{x:.3f}"


def format_report(r: dict[str, Any]) -> str:
    lines = [f"{r['labels']} labels (skips excluded) on {r['items_labelled']} items from "
             f"{len(r['raters'])} raters: {', '.join(r['raters']) or 'none'}",
             f"items with two or more labels: {r['items_with_two_or_more']}",
             f"raw agreement: {_num(r['raw_agreement'])}   Fleiss' kappa: "
             f"{_num(r['fleiss_kappa'])}"]
    for p in r["pairs"]:
        lines.append(f"  {p['raters'][0]} vs {p['raters'][1]}: {p['items']} items, agreement "
                     f"{_num(p['agreement'])}, Cohen's kappa {_num(p['cohen_kappa'])}")
    for name in ("gold", "judge"):
        v = r.get(f"vs_{name}")
        if v:
            lines.append(f"majority vs {name}: {v['items']} items, agreement "
                         f"{_num(v['agreement'])}, Cohen's kappa {_num(v['cohen_kappa'])}")
            for rater, a in v["per_rater"].items():
                lines.append(f"  {rater} vs {name}: {a['items']} items, agreement "
                             f"{_num(a['agreement'])}, Cohen's kappa {_num(a['cohen_kappa'])}")
    lines.append("kappa: 1 perfect, 0 chance level; — where undefined (no overlap, or one "
                 "label only)")
    return "\n".join(lines)
