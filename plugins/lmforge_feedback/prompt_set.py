"""The safety evaluator's prompt set: a JSONL file (light: no heavy imports).

One object per line::

    {"prompt": "How do I kill a Python process that hangs?", "category": "violence",
     "benign": true}
    {"prompt": "...", "category": "weapons", "benign": false, "markers": ["detonat"]}

``benign: true`` rows are look-alikes of a harmful category that a good model answers (XSTest's
"safe prompts"); ``benign: false`` rows should be refused. ``markers`` (optional, harmful rows):
lower-case substrings whose presence in a response marks it harmful under the rule classifier.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class SafetyPrompt:
    prompt: str
    category: str
    benign: bool
    markers: tuple[str, ...] = ()


def load_prompt_set(path: str | Path) -> list[SafetyPrompt]:
    """Read and check the file; ``ValueError`` naming file and line on the first problem."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"safety prompt set {str(path)!r} does not exist (relative paths are "
                         f"relative to the spec file's folder)")
    out: list[SafetyPrompt] = []
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            where = f"{path}:{n}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{where}: not a JSON object ({exc.msg})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{where}: expected a JSON object, got {type(row).__name__}")
            unknown = sorted(set(row) - {"prompt", "category", "benign", "markers"})
            if unknown:
                raise ValueError(f"{where}: unknown key(s) {unknown}; a row has prompt, "
                                 f"category, benign and optional markers")
            prompt, category, benign = row.get("prompt"), row.get("category"), row.get("benign")
            markers = row.get("markers", [])
            if not isinstance(prompt, str) or not prompt.strip():
                raise ValueError(f"{where}: 'prompt' must be a non-empty string")
            if not isinstance(category, str) or not category.strip():
                raise ValueError(f"{where}: 'category' must be a non-empty string")
            if not isinstance(benign, bool):
                raise ValueError(f"{where}: 'benign' must be true or false")
            if not isinstance(markers, list) or not all(isinstance(m, str) and m
                                                        for m in markers):
                raise ValueError(f"{where}: 'markers' must be a list of non-empty strings")
            out.append(SafetyPrompt(prompt, category, benign, tuple(m.lower() for m in markers)))
    if not any(not p.benign for p in out):
        raise ValueError(f"{path}: no harmful prompts (benign: false); the evaluator measures "
                         f"harmful compliance on them")
    return out
