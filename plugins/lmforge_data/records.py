"""Records per dataset format: validation, the texts filters see, and the dedup key.

Formats (see :mod:`lmforge.datasetio`)::

    text             {"text": str}
    chat             {"messages": [{"role", "content"}, ...]}     (at least one assistant turn)
    preference       {"prompt": [messages], "chosen": str, "rejected": str}
    multiple-choice  {"question": str, "choices": [str, ...], "answer": int}
    prompt           {"prompt": [messages], "reference": str | None, "tests": str | None,
                      "entry_point": str | None}

Sources yield loose dicts; :func:`to_record` checks one and returns the canonical record (only
the format's columns), or raises :class:`StageInputError` naming ``where`` (file and record).
Sources of this plugin put ``where`` in the private key ``_where``.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Mapping
from typing import Any

from lmforge import StageInputError
from lmforge.chat import validate_messages

WHERE_KEY = "_where"
#: A source may tag a record with the unit it came from (e.g. its file, relative to the glob's
#: folder); with ``split_by: source`` the train/heldout split is decided by that unit.
GROUP_KEY = "_group"
#: The split decider travels with a record through the filters under this key.
SPLIT_KEY = "_split"
#: Filters' metadata (:attr:`lmforge.FilterResult.metadata`, merged over the chain) travels
#: under this key; a stage whose filters emit metadata stores it as the JSON string column
#: :data:`METADATA_COLUMN` (``null`` for a record no filter labelled).
META_KEY = "_meta"
METADATA_COLUMN = "metadata"

COLUMNS: dict[str, list[str]] = {
    "text": ["text"],
    "chat": ["messages"],
    "preference": ["prompt", "chosen", "rejected"],
    "multiple-choice": ["question", "choices", "answer"],
    "prompt": ["prompt", "reference", "tests", "entry_point"],
}

_WS = re.compile(r"\s+")


def remap(row: Mapping[str, Any], text_field: str | None, fields: Mapping[str, str],
          where: str) -> dict[str, Any]:
    """Apply a source's ``fields`` renames and ``text_field`` to one raw row."""
    out = dict(row)
    for src, dst in fields.items():
        if src in out:
            out[dst] = out.pop(src)
    if text_field is not None:
        if text_field not in out:
            raise StageInputError(f"{where}: record has no field {text_field!r} (text_field); "
                                  f"its keys are {sorted(map(str, out))[:20]}")
        out["text"] = out.pop(text_field)
    return out


def _str_field(raw: Mapping[str, Any], key: str, where: str, fmt: str) -> str:
    if key not in raw or raw[key] is None:
        raise StageInputError(f"{where}: {fmt} record has no {key!r} field (keys: "
                              f"{sorted(map(str, raw))[:20]}); add it, or map a field to it "
                              f"with the source's 'fields' option")
    value = raw[key]
    if isinstance(value, list) and value and isinstance(value[-1], dict):
        value = value[-1].get("content")  # a conversation ending in the reply
    if not isinstance(value, str):
        raise StageInputError(f"{where}: {key!r} must be a string, got "
                              f"{type(value).__name__}")
    return value


def to_record(raw: Mapping[str, Any], fmt: str, where: str) -> dict[str, Any]:
    """Validate ``raw`` for ``fmt`` and return the canonical record (format columns only)."""
    if not isinstance(raw, Mapping):
        raise StageInputError(f"{where}: a record must be an object, got {type(raw).__name__}")
    if fmt == "text":
        return {"text": _str_field(raw, "text", where, fmt)}
    if fmt == "chat":
        if "messages" not in raw:
            raise StageInputError(f"{where}: chat record has no 'messages' field (keys: "
                                  f"{sorted(map(str, raw))[:20]}); map one with 'fields'")
        return {"messages": validate_messages(raw["messages"], where, need_assistant=True)}
    if fmt == "preference":
        if "prompt" not in raw:
            raise StageInputError(f"{where}: preference record has no 'prompt' field (keys: "
                                  f"{sorted(map(str, raw))[:20]})")
        prompt = raw["prompt"]
        if isinstance(prompt, str):
            prompt = [{"role": "user", "content": prompt}]
        prompt = validate_messages(prompt, where + " (prompt)", need_assistant=False)
        return {"prompt": prompt, "chosen": _str_field(raw, "chosen", where, fmt),
                "rejected": _str_field(raw, "rejected", where, fmt)}
    if fmt == "multiple-choice":
        question = _str_field(raw, "question", where, fmt)
        choices = raw.get("choices")
        if (not isinstance(choices, list) or len(choices) < 2
                or not all(isinstance(c, str) for c in choices)):
            raise StageInputError(f"{where}: 'choices' must be a list of at least 2 strings, "
                                  f"got {choices!r:.120}")
        answer = raw.get("answer")
        if isinstance(answer, str) and len(answer) == 1 and answer.upper().isalpha():
            answer = ord(answer.upper()) - ord("A")
        if (isinstance(answer, bool) or not isinstance(answer, int)
                or not 0 <= answer < len(choices)):
            raise StageInputError(f"{where}: 'answer' must be the index of the right choice "
                                  f"(0..{len(choices) - 1}) or its letter, got {answer!r}")
        return {"question": question, "choices": list(choices), "answer": int(answer)}
    if fmt == "prompt":
        if "prompt" not in raw:
            raise StageInputError(f"{where}: prompt record has no 'prompt' field (keys: "
                                  f"{sorted(map(str, raw))[:20]})")
        prompt = raw["prompt"]
        if isinstance(prompt, str):
            prompt = [{"role": "user", "content": prompt}]
        out = {"prompt": validate_messages(prompt, where + " (prompt)", need_assistant=False)}
        for key in ("reference", "tests", "entry_point"):
            value = raw.get(key)
            if value is not None and not isinstance(value, str):
                raise StageInputError(f"{where}: {key!r} must be a string or absent, got "
                                      f"{type(value).__name__}")
            out[key] = value
        return out
    raise ValueError(f"unknown format {fmt!r}")


def texts(record: Mapping[str, Any], fmt: str) -> list[str]:
    """The strings filters look at, in a fixed order (see :func:`with_texts`)."""
    if fmt == "text":
        return [record["text"]]
    if fmt == "chat":
        return [m["content"] for m in record["messages"]]
    if fmt == "preference":
        return [m["content"] for m in record["prompt"]] + [record["chosen"], record["rejected"]]
    if fmt == "prompt":
        return [m["content"] for m in record["prompt"]]
    return [record["question"]]


def with_texts(record: dict[str, Any], fmt: str, new: list[str]) -> dict[str, Any]:
    """A copy of ``record`` with the strings of :func:`texts` replaced by ``new``."""
    out = _with_texts(record, fmt, new)
    if SPLIT_KEY in record:
        out[SPLIT_KEY] = record[SPLIT_KEY]
    return out


def _with_texts(record: dict[str, Any], fmt: str, new: list[str]) -> dict[str, Any]:
    if fmt == "text":
        return {"text": new[0]}
    if fmt == "chat":
        return {"messages": [{"role": m["role"], "content": t}
                             for m, t in zip(record["messages"], new)]}
    if fmt == "preference":
        n = len(record["prompt"])
        return {"prompt": [{"role": m["role"], "content": t}
                           for m, t in zip(record["prompt"], new[:n])],
                "chosen": new[n], "rejected": new[n + 1]}
    if fmt == "prompt":
        return {**record, "prompt": [{"role": m["role"], "content": t}
                                     for m, t in zip(record["prompt"], new)]}
    return {**record, "question": new[0]}


def normalize(text: str) -> str:
    """NFKC, lower case, whitespace runs collapsed to one space, stripped."""
    return _WS.sub(" ", unicodedata.normalize("NFKC", text).lower()).strip()


def key_parts(record: Mapping[str, Any], fmt: str) -> list[str]:
    """Every string that makes a record what it is (roles and answer included)."""
    if fmt == "text":
        return [record["text"]]
    if fmt == "chat":
        return [p for m in record["messages"] for p in (m["role"], m["content"])]
    if fmt == "preference":
        return ([p for m in record["prompt"] for p in (m["role"], m["content"])]
                + [record["chosen"], record["rejected"]])
    if fmt == "prompt":
        return ([p for m in record["prompt"] for p in (m["role"], m["content"])]
                + [record.get(k) or "" for k in ("reference", "tests", "entry_point")])
    return [record["question"], *record["choices"], str(record["answer"])]


def digest(record: Mapping[str, Any], fmt: str) -> bytes:
    """16-byte hash of the normalised record: the dedup key and the split decider."""
    h = hashlib.blake2b(digest_size=16)
    for part in key_parts(record, fmt):
        h.update(normalize(part).encode("utf-8"))
        h.update(b"\x00")
    return h.digest()


def columns(fmt: str, metadata: bool = False) -> list[str]:
    """A format's columns, with :data:`METADATA_COLUMN` last when ``metadata``."""
    return [*COLUMNS[fmt], METADATA_COLUMN] if metadata else list(COLUMNS[fmt])


def metadata_json(meta: Mapping[str, Any] | None) -> str | None:
    """The ``metadata`` column's value: sorted-key JSON, or ``None`` when empty."""
    import json

    return json.dumps(dict(meta), sort_keys=True, ensure_ascii=False) if meta else None


def arrow_schema(fmt: str, metadata: bool = False) -> Any:
    """The pyarrow schema of a format's shards (with the ``metadata`` column when asked)."""
    schema = _arrow_schema(fmt)
    if metadata:
        import pyarrow as pa

        schema = schema.append(pa.field(METADATA_COLUMN, pa.string()))
    return schema


def _arrow_schema(fmt: str) -> Any:
    import pyarrow as pa

    message = pa.struct([("role", pa.string()), ("content", pa.string())])
    if fmt == "text":
        return pa.schema([("text", pa.string())])
    if fmt == "chat":
        return pa.schema([("messages", pa.list_(message))])
    if fmt == "preference":
        return pa.schema([("prompt", pa.list_(message)), ("chosen", pa.string()),
                          ("rejected", pa.string())])
    if fmt == "prompt":
        return pa.schema([("prompt", pa.list_(message)), ("reference", pa.string()),
                          ("tests", pa.string()), ("entry_point", pa.string())])
    return pa.schema([("question", pa.string()), ("choices", pa.list_(pa.string())),
                      ("answer", pa.int64())])
