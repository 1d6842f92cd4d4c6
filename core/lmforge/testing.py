"""Helpers for testing lmforge plugins, first- or third-party.

* :func:`plugin_manager` — a manager with exactly the plugins you pass (no installation needed);
  ``autoload=True`` adds the installed entry points.
* :func:`validate_spec` / :func:`run_spec` — validate or run a spec given as a dict or YAML text.
* :func:`check_plugin` — the conformance check plugin authors run on their package; returns a
  list of problems (empty when the plugin conforms). ``assert not check_plugin(my_plugin)``.
* :func:`write_dataset_artifact` / :func:`write_tokenizer_artifact` — small artifacts in the
  core's formats, to feed a stage under test without running the stages that make them.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from lmforge import hookspecs
from lmforge.components import STAGE_KINDS, Component, Config
from lmforge.interfaces import FilterResult
from lmforge.plugins import PluginManager
from lmforge.progress import Progress


def plugin_manager(*plugins: Any, autoload: bool = False, modules: Iterable[str] = ()
                   ) -> PluginManager:
    """A :class:`PluginManager` with ``plugins`` (modules or objects) registered in-process."""
    pm = PluginManager.load(autoload=autoload, modules=list(modules), trace=False)
    for i, p in enumerate(plugins):
        name = getattr(p, "__name__", None) or f"{type(p).__name__}-{i}"
        pm.register(p, name=name, distribution="<test>", version="0")
    return pm


def _located(spec: Mapping[str, Any] | str, file: str = "<test spec>") -> Any:
    from lmforge.spec.source import load_yaml

    text = spec if isinstance(spec, str) else yaml.safe_dump(dict(spec), sort_keys=False)
    return load_yaml(text, file)


def validate_spec(spec: Mapping[str, Any] | str, plugins: PluginManager,
                  overrides: Iterable[str] = (), *, base_dir: Path | None = None,
                  check_files: bool = False) -> Any:
    """Validate a spec dict or YAML text; returns the validated pipeline or raises SpecError.

    ``base_dir`` plays the spec file's folder (relative ``SpecPath`` values become absolute
    against it; without it they are left relative to the current directory) and
    ``check_files=True`` makes configs check that the files they name exist, as
    ``lmforge validate`` does (see :mod:`lmforge.specpath`).
    """
    from lmforge.spec.source import apply_overrides
    from lmforge.spec.validate import validate

    src = _located(spec)
    if overrides:
        apply_overrides(src, list(overrides))
    return validate(src, plugins, base_dir=base_dir, check_files=check_files)


def run_spec(spec: Mapping[str, Any] | str, plugins: PluginManager, run_dir: Path, *,
             overrides: Iterable[str] = (), force: Iterable[str] = (), only: str | None = None,
             until: str | None = None, base_dir: Path | None = None) -> Any:
    """Validate and run a spec into ``run_dir``; returns :class:`lmforge.runner.RunResult`.
    ``base_dir``: as for :func:`validate_spec` (relative paths in the spec are relative to it)."""
    from lmforge.runner import Runner

    pipeline = validate_spec(spec, plugins, overrides, base_dir=base_dir)
    runner = Runner(pipeline, plugins, run_dir=Path(run_dir), progress=Progress(enabled=False),
                    force=set(force))
    return runner.run(only=only, until=until)


# -- artifacts for tests ------------------------------------------------------------------------
def write_dataset_artifact(path: Path, fmt: str, splits: Mapping[str, Iterable[Mapping[str, Any]]],
                           rows_per_shard: int = 100_000) -> Path:
    """Write a ``dataset/<fmt>`` artifact (see :mod:`lmforge.datasetio`): Parquet shards of at
    most ``rows_per_shard`` rows per split (none for an empty split), ``artifact.json`` and an
    empty ``stats.json``. Returns ``path``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    meta: dict[str, Any] = {"format": fmt, "splits": {}, "columns": []}
    for split, rows in splits.items():
        rows = [dict(r) for r in rows]
        (path / split).mkdir(parents=True, exist_ok=True)
        shards = 0
        for start in range(0, len(rows), rows_per_shard):
            table = pa.Table.from_pylist(rows[start:start + rows_per_shard])
            pq.write_table(table, path / split / f"shard-{shards:05d}.parquet")
            shards += 1
            meta["columns"] = table.column_names
        meta["splits"][split] = {"rows": len(rows), "shards": shards}
    (path / "artifact.json").write_text(json.dumps(meta))
    (path / "stats.json").write_text("{}")
    return path


def write_tokenizer_artifact(path: Path, texts: Iterable[str], vocab_size: int = 300,
                             min_frequency: int = 0) -> Path:
    """Train a small byte-level BPE on ``texts`` with lmforge's special tokens and write a
    ``tokenizer`` artifact (see :mod:`lmforge.chat`) that ``transformers`` can load too."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from lmforge.chat import EOS, PAD, SPECIAL_TOKENS, jinja_template

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(list(texts), trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tok.save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "eos_token": EOS, "pad_token": PAD,
        "chat_template": jinja_template(), "model_max_length": 1024}))
    (path / "special_tokens_map.json").write_text(json.dumps({"eos_token": EOS,
                                                              "pad_token": PAD}))
    (path / "artifact.json").write_text(json.dumps({
        "vocab_size": tok.get_vocab_size(),
        "special_tokens": {t: tok.token_to_id(t) for t in SPECIAL_TOKENS}}))
    return path


# -- conformance -------------------------------------------------------------------------------
def check_plugin(plugin: Any) -> list[str]:
    """Check a plugin module/object against lmforge's conventions; return the problems found.

    Checks: hook implementations name known hooks with known arguments; components are
    :class:`Component` records with unique names, a :class:`Config` config model whose JSON
    Schema can be generated, whose every field has a description or a default documented in the
    schema, and a factory that can be imported; stage components use a known stage kind and
    declare outputs.

    Then every non-stage component of a kind whose factory call lmforge defines (see
    :data:`BUILD_ARGS`) and that has a default config is *built*, as a pipeline builds it: the
    config a spec's ``{type: name}`` gives (validated by the spec's model for that component;
    it may need installed plugins for ``Slot`` defaults) is passed to the factory. A config
    with a required field, or whose validators reject the defaults, has no default config. A filter built this way must survive a pickle round
    trip (the data stage sends filters to worker processes with ``num_proc > 1``) and return a
    :class:`lmforge.FilterResult` for a sample text, before and after; one whose config
    ``requires()`` artifacts must have a ``bind(inputs)`` instead (it is not called unbound). Stages are not built
    (they need a run context: test them with :func:`run_spec`).
    """
    problems: list[str] = []
    specs = {n: getattr(hookspecs, n) for n in dir(hookspecs) if n.startswith("lmforge_")}
    for name, fn in inspect.getmembers(plugin, callable):
        if not name.startswith("lmforge_"):
            continue
        if name not in specs:
            problems.append(f"{name}: not an lmforge hook (known: {', '.join(sorted(specs))})")
            continue
        allowed = set(inspect.signature(specs[name]).parameters)
        extra = set(inspect.signature(fn).parameters) - allowed
        if extra:
            problems.append(f"{name}: unknown argument(s) {sorted(extra)}; the hook passes "
                            f"{sorted(allowed)}")
        if not hasattr(fn, f"{hookspecs.PROJECT}_impl"):
            problems.append(f"{name}: not marked with @lmforge.hookimpl")
    contribute = getattr(plugin, "lmforge_components", None)
    components: list[Any] = list(contribute() or []) if callable(contribute) else []
    seen: set[tuple[str, str]] = set()
    for c in components:
        if not isinstance(c, Component):
            problems.append(f"lmforge_components returned {c!r}, not an lmforge.Component")
            continue
        label = f"{c.kind} {c.name!r}"
        if (c.kind, c.name) in seen:
            problems.append(f"{label}: contributed twice")
        seen.add((c.kind, c.name))
        if not c.name or c.name != c.name.strip() or " " in c.name:
            problems.append(f"{label}: names must be non-empty without spaces")
        if not (isinstance(c.config, type) and issubclass(c.config, Config)):
            problems.append(f"{label}: config must be a subclass of lmforge.Config")
            continue
        problems += _check_config_model(label, c.config)
        if c.stage_kind is not None:
            if c.stage_kind not in STAGE_KINDS:
                problems.append(f"{label}: unknown stage kind {c.stage_kind!r}")
            if not c.outputs:
                problems.append(f"{label}: a stage must declare its outputs")
        if not c.description:
            problems.append(f"{label}: no description (shown by `lmforge plugins list`)")
        try:
            c.load_factory()
        except Exception as exc:  # noqa: BLE001
            problems.append(f"{label}: factory {c.factory!r} cannot be loaded: "
                            f"{type(exc).__name__}: {exc}")
            continue
        if not _has_problem(problems, label):
            problems += _check_default_build(plugin, c, label)
    return problems


def _has_problem(problems: list[str], label: str) -> bool:
    """Whether ``label`` already has a problem (then it is not built: one cause, one report)."""
    return any(p.startswith(f"{label}:") for p in problems)


#: Extra arguments of ``factory(config, *args)`` per component kind, as lmforge calls them
#: (docs/architecture.md); the check builds only these kinds (``tracker`` gets a temp folder).
BUILD_ARGS: dict[str, tuple[Any, ...]] = {
    "filter": (), "source": (), "backend": (), "evaluator": (), "architecture": (256,),
    "tracker": ("<run_dir>",),
}
_SAMPLE_TEXT = "A short sample document.\nIt has two lines and an EMAIL: a@example.com.\n"


def _has_default(model: type[BaseModel]) -> bool:
    return all(not f.is_required() for name, f in model.model_fields.items() if name != "type")


def _default_config(plugin: Any, c: Component) -> tuple[Any, str]:
    """The component's default config as a spec would validate it, or ``(None, why not)``.

    Tried first with only ``plugin`` registered, then with the installed plugins too (a ``Slot``
    default may name another plugin's component).
    """
    error = ""
    for autoload in (False, True):
        try:
            pm = plugin_manager(plugin, autoload=autoload)
            model = pm.component_config_model(c.kind, c.name)
            return model.model_validate({"type": c.name} if "type" in model.model_fields
                                        else {}), ""
        except Exception as exc:  # noqa: BLE001 - reported below if both attempts fail
            error = f"{type(exc).__name__}: {exc}"
    return None, error


def _check_default_build(plugin: Any, c: Component, label: str) -> list[str]:
    """Build ``c`` from its default config (see :func:`check_plugin`); return problems."""
    import pickle
    import tempfile

    if c.kind not in BUILD_ARGS or not _has_default(c.config):
        return []
    config, _error = _default_config(plugin, c)
    if config is None:
        return []  # its defaults do not validate (e.g. "set words or patterns"): no default
    with tempfile.TemporaryDirectory(prefix="lmforge-check-") as tmp:
        args = tuple(Path(tmp) if a == "<run_dir>" else a for a in BUILD_ARGS[c.kind])
        try:
            built = c.load_factory()(config, *args)
        except Exception as exc:  # noqa: BLE001
            return [f"{label}: factory {c.factory!r} fails on the default config "
                    f"({_short(config)}): {type(exc).__name__}: {exc}"]
        if c.kind != "filter":
            return []
        try:
            copy = pickle.loads(pickle.dumps(built))
        except Exception as exc:  # noqa: BLE001
            return [f"{label}: the filter built from the default config cannot be pickled "
                    f"({type(exc).__name__}: {exc}); filters run in worker processes when the "
                    f"data stage has num_proc > 1, so keep plain values (str, int, float, "
                    f"compiled regexes) on the filter object, not the config object"]
        requires = getattr(config, "requires", None)
        if callable(requires) and requires():
            # it reads artifacts (a classifier, a model): it decides only once bound to them
            return [] if callable(getattr(built, "bind", None)) else [
                f"{label}: its config requires inputs {sorted(requires())} but the filter has "
                f"no bind(inputs) to receive them"]
        for which, f in (("built", built), ("unpickled", copy)):
            try:
                result = f(_SAMPLE_TEXT)
            except Exception as exc:  # noqa: BLE001
                return [f"{label}: the {which} filter raised on a sample text: "
                        f"{type(exc).__name__}: {exc}"]
            if not isinstance(result, FilterResult):
                return [f"{label}: the {which} filter returned {type(result).__name__}, "
                        f"expected lmforge.FilterResult"]
    return []


def _short(config: Any) -> str:
    text = repr(config.model_dump() if isinstance(config, BaseModel) else config)
    return text if len(text) <= 80 else text[:77] + "..."


def _check_config_model(label: str, model: type[BaseModel]) -> list[str]:
    problems = []
    if model.model_config.get("extra") != "forbid":
        problems.append(f"{label}: config model {model.__name__} must forbid unknown keys "
                        f"(subclass lmforge.Config)")
    try:
        json.dumps(model.model_json_schema())
    except Exception as exc:  # noqa: BLE001
        problems.append(f"{label}: config model {model.__name__} has no JSON Schema: {exc}")
    for fname, info in model.model_fields.items():
        if not info.description:
            problems.append(f"{label}: config field {model.__name__}.{fname} has no description "
                            f"(use Field(description=...))")
    return problems
