"""The ``lmforge`` command (also ``python -m lmforge``).

Exit codes: 0 success; 1 a stage failed at run time; 2 the spec or the command line is invalid
(nothing is written to the run directory); 130 interrupted (rerun the same command to resume).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import textwrap
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from lmforge._version import __version__
from lmforge.errors import LmforgeError, PluginError, SpecError, StageFailed

EXIT_OK, EXIT_FAILED, EXIT_SPEC, EXIT_INTERRUPTED = 0, 1, 2, 130

EPILOG = """\
Overrides: KEY=VALUE after the spec sets a value without editing the file. KEY is a stage id
followed by a path in its config (pretrain.loop.steps=200), a stage field (pretrain.inputs.dataset=
corpus2) or a top-level key (seed=3, run_dir=runs/try2). VALUE is YAML (200, true, [a, b]).

Paths: relative paths in the spec, overrides included, are relative to the spec file's folder;
--run-dir is relative to the current directory.

Plugins: installed plugins are discovered through the entry-point group 'lmforge.plugins'.
  LMFORGE_DISABLE_PLUGIN_AUTOLOAD=1   load none (use -p to add modules)
  LMFORGE_PLUGINS=data,models         load only these entry points
  LMFORGE_TRACE_HOOKS=1               print every hook call
"""


class _LazyConsole:
    """A rich ``Console`` made on first use: importing rich costs about 50 ms, which commands
    that print nothing through it (or only plain lines, see :func:`cmd_validate`) save."""

    def __init__(self, stderr: bool) -> None:
        self._stderr = stderr
        self._console: Any = None

    def __getattr__(self, name: str) -> Any:
        if self._console is None:
            self._console = _rich_console(self._stderr)
        return getattr(self._console, name)


def _console(stderr: bool = True) -> Any:
    return _LazyConsole(stderr)


def _rich_console(stderr: bool) -> Any:
    import shutil

    from rich.console import Console

    # On a terminal: its width (rich finds it; a wider table would wrap every row). In pipes
    # and CI logs rich would assume 80 columns, where tables read badly: COLUMNS if set, else
    # 160.
    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() else shutil.get_terminal_size((160, 24)).columns
    # emoji=False: ':100:' in 'pipeline.yaml:100:' must not print as an emoji. Text from the
    # user (specs, paths, messages) is passed through _esc() wherever markup is on.
    return Console(stderr=stderr, highlight=False, soft_wrap=True, width=width, emoji=False)


def _esc(value: Any) -> str:
    """``str(value)`` with rich markup escaped, for user text inside a markup string."""
    from rich.markup import escape

    return escape(str(value))


class UsageError(LmforgeError):
    """A bad option value (an unknown stage for --only, a run folder that cannot be one ...):
    exit code 2, nothing written."""


def _plugin_options(top: bool) -> argparse.ArgumentParser:
    """Plugin options, accepted before or after the subcommand.

    Sub-command copies default to SUPPRESS so they don't overwrite values given before the
    subcommand (argparse applies subparser defaults last).
    """
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("plugin options")
    g.add_argument("-p", "--plugin", dest="plugin_modules", action="append",
                   default=[] if top else argparse.SUPPRESS,
                   metavar="MODULE", help="also load this importable module as a plugin "
                   "(an in-house plugin that is not packaged); repeatable")
    g.add_argument("--no-autoload", action="store_true",
                   default=None if top else argparse.SUPPRESS,
                   help="do not load installed plugins (as LMFORGE_DISABLE_PLUGIN_AUTOLOAD=1)")
    g.add_argument("--plugins", dest="allow", metavar="NAMES",
                   default=None if top else argparse.SUPPRESS,
                   help="comma-separated allow-list of installed plugins (entry-point names)")
    g.add_argument("--trace-hooks", action="store_true",
                   default=None if top else argparse.SUPPRESS,
                   help="print every hook call and its result to stderr")
    return p


def _spec_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", type=Path, help="pipeline spec (YAML)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="overrides (see below)")


def _verify_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--verify", choices=("hash", "size"), default="hash",
                   help="before reusing a finished stage, check that its output files still "
                   "match the sizes and sha256 recorded when they were written (hash, the "
                   "default: every file is read again), or their sizes only (size: instant, "
                   "misses a same-size change). Checkpoints are always re-hashed before a "
                   "resume")


def build_parser(plugin_commands: Mapping[str, list[Any]] | None = None,
                 chosen: str | None = None) -> argparse.ArgumentParser:
    """The ``lmforge`` parser: built-in commands, plus ``plugin_commands`` (name -> the
    :class:`lmforge.commands.Command` records plugins add under it; see
    :func:`_add_plugin_commands`). ``parser.builtin_commands`` names the built-in ones."""
    common = _plugin_options(top=False)
    parser = argparse.ArgumentParser(
        prog="lmforge", description="Train language models end to end from one pipeline spec: "
        "data, tokenizer, pre-training, fine-tuning, alignment, evaluation, export.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter, parents=[_plugin_options(top=True)])
    parser.add_argument("--version", action="version", version=f"lmforge {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    fmt = argparse.RawDescriptionHelpFormatter

    run = sub.add_parser("run", parents=[common], epilog=EPILOG, formatter_class=fmt,
                         help="run a pipeline (reuses unchanged stages, resumes interrupted ones)",
                         description="Run the stages of SPEC in dependency order. A stage whose "
                         "config, plugin version and inputs are unchanged is reused; an "
                         "interrupted stage resumes from its last checkpoint.")
    _spec_args(run)
    run.add_argument("--run-dir", help="run directory (default: the spec's run_dir, or "
                     "runs/<name>)")
    run.add_argument("--force", action="append", default=[], metavar="STAGE",
                     help="rerun STAGE even if it could be reused (repeatable)")
    sel = run.add_mutually_exclusive_group()
    sel.add_argument("--only", metavar="STAGE", help="run only STAGE (its inputs must exist)")
    sel.add_argument("--until", metavar="STAGE", help="run STAGE and what it depends on")
    run.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    _verify_arg(run)
    run.add_argument("--nproc", type=_positive_int, metavar="N", help="launch N worker processes on this "
                     "machine (through torch.distributed.run) and run the pipeline on all of "
                     "them; stages with a distributed backend (ddp, fsdp2) train on every rank. "
                     "Under torchrun, leave this out: `torchrun --nproc-per-node N -m "
                     "lmforge.cli run SPEC` works unchanged")

    val = sub.add_parser("validate", parents=[common], epilog=EPILOG, formatter_class=fmt,
                         help="check a spec and report every error with file:line",
                         description="Validate SPEC (and overrides) against the installed "
                         "plugins without running anything. Exit code 2 if invalid.")
    _spec_args(val)

    plan = sub.add_parser("plan", parents=[common], epilog=EPILOG, formatter_class=fmt,
                          help="show the stage graph, what would be reused, and estimates",
                          description="Print the DAG of SPEC, which stages `run` would reuse "
                          "or run, and the estimates plugins give (parameters, tokens, FLOPs).")
    _spec_args(plan)
    plan.add_argument("--run-dir", help="run directory to compare with")
    _verify_arg(plan)

    schema = sub.add_parser("schema", parents=[common], help="print the JSON Schema of specs",
                            description="Print one JSON Schema covering every installed "
                            "plugin's config (for editors: yaml-language-server).")
    schema.add_argument("-o", "--output", type=Path, help="write to this file instead of stdout")
    schema.add_argument("--format", choices=("json", "markdown"), default="json",
                        help="json: JSON Schema (default); markdown: the spec reference")
    schema.add_argument("--first-party", action="store_true",
                        help="only lmforge's own plugins, whatever else is installed (how "
                        "docs/spec-reference.md is generated)")

    plugins = sub.add_parser("plugins", parents=[common], help="list and inspect plugins",
                             description="Inspect installed plugins and the plugin catalog.")
    psub = plugins.add_subparsers(dest="plugins_command", metavar="SUBCOMMAND")
    pl = psub.add_parser("list", parents=[common], help="installed plugins, failures, and "
                         "catalog plugins you could install")
    pl.add_argument("--json", action="store_true", help="machine-readable output")
    pi = psub.add_parser("info", parents=[common], help="components and config of one plugin "
                         "or component")
    pi.add_argument("name", help="plugin (entry-point) name, or component name")

    rep = sub.add_parser("report", help="write the HTML and Markdown report of a run folder",
                         description="Write the run report of RUN_DIR: each stage's status, the "
                         "lineage graph, loss and learning-rate curves of training stages, "
                         "evaluation tables (model against baseline), data statistics. "
                         "`lmforge run` writes it at the end of every run.")
    rep.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="the run folder (`lmforge "
                     "run` prints it)")
    rep.add_argument("-o", "--output", type=Path, metavar="DIR", help="write into DIR "
                     "(default: RUN_DIR/_report)")

    newp = sub.add_parser("new-plugin", help="write a new plugin package to start from",
                          description="Write the package lmforge-NAME (pyproject with the entry "
                          "point, a working example component, tests) into DIR.")
    newp.add_argument("name", help="plugin name, e.g. my-filters")
    newp.add_argument("--dir", type=Path, default=None,
                      help="where to create it (default: ./lmforge-NAME)")
    newp.add_argument("--force", action="store_true", help="write into a non-empty directory")
    _serve_parser(sub, common)
    parser.builtin_commands = tuple(sub.choices)  # type: ignore[attr-defined]
    if plugin_commands:
        _add_plugin_commands(sub, common, plugin_commands, chosen)
    return parser


SERVE_EPILOG = """\
MODEL is a model artifact folder (it holds model.json) or a run's stage folder
(runs/<name>/<stage>: its outputs/model is served and the tokenizer it was trained with is read
from its manifest, so --tokenizer may be left out).

Examples:
  lmforge serve runs/quickstart/sft --port 8000
  curl http://127.0.0.1:8000/v1/chat/completions -H 'Content-Type: application/json' \\
    -d '{"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 32}'
  curl http://127.0.0.1:8000/v1/completions -H 'Content-Type: application/json' \\
    -d '{"prompt": "def add(a, b):", "max_tokens": 32, "temperature": 0}'

Concurrent requests are gathered for --batch-window-ms into one batched generation.
See docs/plugins/generation.md.
"""


def _serve_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    serve = sub.add_parser(
        "serve", parents=[common], epilog=SERVE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="serve a model over an OpenAI-compatible HTTP API",
        description="Serve MODEL over HTTP: /v1/chat/completions (with the tokenizer's chat "
        "template), /v1/completions and /v1/models, with request batching.")
    serve.add_argument("model", type=Path, metavar="MODEL", help="model artifact or stage "
                       "folder (see below)")
    serve.add_argument("--tokenizer", type=Path, metavar="DIR", help="the tokenizer artifact "
                       "the model was trained with (default: from the stage's manifest)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default "
                       "127.0.0.1; 0.0.0.0 for every interface)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000; 0: any "
                       "free port)")
    serve.add_argument("--name", help="the model name clients see and send (default: the "
                       "stage id or folder name)")
    serve.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda "
                       "or cuda:N")
    serve.add_argument("--dtype", choices=("float32", "bfloat16", "float16"),
                       default="float32", help="parameter dtype (default float32)")
    serve.add_argument("--batch-size", type=_positive_int, default=16, metavar="N",
                       help="rows per forward pass (default 16)")
    serve.add_argument("--batch-window-ms", type=float, default=5.0, metavar="MS",
                       help="how long to gather concurrent requests into one batch "
                       "(default 5)")
    serve.add_argument("--max-tokens", type=_positive_int, default=256, metavar="N",
                       help="completion length when a chat request gives no max_tokens "
                       "(default 256)")
    serve.add_argument("--generator", default=None, metavar="NAME",
                       help="an installed generator component instead of the builtin "
                       "service, e.g. vllm (`lmforge plugins list` shows them)")
    serve.add_argument("--generator-config", default=None, metavar="JSON",
                       help="its config as JSON, e.g. '{\"gpu_memory_utilization\": 0.5}'")


def cmd_serve(args: argparse.Namespace, pm: Any, console: Any) -> int:
    import logging

    from lmforge.serving import resolve_model, start_server

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    model_dir, tok_dir = resolve_model(args.model, args.tokenizer)
    generator = None
    if args.generator:
        from lmforge.chat import load_tokenizer
        from lmforge.generators import build_generator

        try:
            extra = json.loads(args.generator_config or "{}")
        except json.JSONDecodeError as exc:
            raise UsageError(f"--generator-config is not valid JSON: {exc}") from None
        model = pm.component_config_model("generator", args.generator)
        try:
            config = model.model_validate({"type": args.generator, **extra})
        except Exception as exc:  # pydantic's ValidationError names the keys
            raise UsageError(f"--generator-config for {args.generator!r}: {exc}") from None
        try:
            generator = build_generator(pm, config, model_dir, load_tokenizer(tok_dir))
        except ImportError as exc:  # an engine that is not installed says how to install it
            raise UsageError(str(exc)) from None
    handle = start_server(model_dir, tok_dir, host=args.host, port=args.port,
                          generator=generator, plugins=pm, device=args.device, dtype=args.dtype,
                          batch_size=args.batch_size, batch_window_ms=args.batch_window_ms,
                          model_name=args.name, default_max_tokens=args.max_tokens,
                          background=False)
    console.print(f"serving {handle.model_name} ({handle.generator.describe()}) at "
                  f"{handle.url}/v1 — Ctrl-C stops", markup=False)
    try:
        handle.serve_forever()
    except KeyboardInterrupt:
        console.print("stopped")
    finally:
        handle.close()
    return EXIT_OK


def _add_plugin_commands(sub: Any, common: argparse.ArgumentParser,
                         commands: Mapping[str, list[Any]], chosen: str | None) -> None:
    """Add plugins' commands (:mod:`lmforge.commands`) as subparsers. Only ``chosen``'s
    factory is imported and called to add its arguments; its ``run`` goes to the defaults as
    ``plugin_run``. A name two plugins add, or one that cannot be loaded, is a
    :class:`UsageError` when chosen."""
    for name, cmds in sorted(commands.items()):
        if name in sub.choices:
            continue  # a built-in command wins (the caller warns)
        cmd = cmds[0]
        # The epilog keeps its layout (examples); the description is wrapped here, since one
        # formatter class governs both.
        description = "\n\n".join(textwrap.fill(" ".join(par.split()), 79) for par in
                                   (cmd.description or cmd.help).split("\n\n"))
        p = sub.add_parser(name, parents=[common], help=f"{cmd.help} [plugin {cmd.plugin}]",
                           description=description, epilog=cmd.epilog or None,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        if name != chosen:
            continue
        if len(cmds) > 1:
            raise UsageError(f"command {name!r} is added by several plugins: "
                             f"{', '.join(repr(c.plugin) for c in cmds)}; disable all but one "
                             f"with --plugins or LMFORGE_PLUGINS")
        try:
            run = cmd.load_factory()(p)
        except Exception as exc:  # noqa: BLE001 - a broken plugin is reported, not raised
            raise UsageError(f"command {name!r} of plugin {cmd.plugin!r} cannot be loaded: "
                             f"{type(exc).__name__}: {exc}") from exc
        if not callable(run):
            raise UsageError(f"command {name!r} of plugin {cmd.plugin!r}: its factory returned "
                             f"{run!r}, not the function that runs the command")
        p.set_defaults(plugin_run=run)


def _parser_with_plugin_commands(argv: list[str], warnings: list[str]
                                 ) -> tuple[argparse.ArgumentParser, Any]:
    """The parser for ``argv``, and the plugin manager when plugins had to be loaded for it.

    Plugins are loaded here only when ``argv`` names no built-in command (a plugin's command,
    a typo, or ``lmforge --help``), so built-in commands start as fast as before."""
    parser = build_parser()
    pre, rest = _plugin_options(top=True).parse_known_args(argv)
    word = next((w for w in rest if not w.startswith("-")), None)
    if word in parser.builtin_commands or "--version" in rest:  # type: ignore[attr-defined]
        return parser, None
    from lmforge.commands import collect_commands

    pm = _load_plugins(pre)
    commands, problems = collect_commands(pm)
    warnings += problems
    for name, cmds in commands.items():
        if name in parser.builtin_commands:  # type: ignore[attr-defined]
            warnings.append(f"plugin {cmds[0].plugin!r} adds a command {name!r}, which is "
                            f"built in; the plugin's is ignored")
    return build_parser(commands, chosen=word), pm


def _load_plugins(args: argparse.Namespace) -> Any:
    from lmforge.plugins import PluginManager

    allow = [n.strip() for n in args.allow.split(",") if n.strip()] if args.allow else None
    return PluginManager.load(autoload=False if args.no_autoload else None, allow=allow,
                              modules=args.plugin_modules, trace=args.trace_hooks)


def _warn_failures(pm: Any, console: Any) -> None:
    for f in pm.failures:
        console.print(f"[yellow]warning:[/] {_esc(f.format())}", markup=True)


def _print_spec_error(exc: SpecError, console: Any) -> None:
    n = len(exc.issues)
    console.print(f"[red bold]{n} error{'s' if n != 1 else ''} in the spec:[/]")
    for issue in exc.issues:
        console.print(f"  {issue.format()}", markup=False)


def _validated(args: argparse.Namespace, pm: Any) -> Any:
    from lmforge.spec.validate import load_and_validate

    return load_and_validate(str(args.spec), pm, list(args.overrides))


# -- commands ------------------------------------------------------------------------------------
def cmd_validate(args: argparse.Namespace, pm: Any, console: Any) -> int:
    pipeline = _validated(args, pm)
    ids = ", ".join(s.id for s in pipeline.stages)
    if not sys.stderr.isatty():  # what rich prints to a pipe (no colour), without importing it
        sys.stderr.write(f"ok: {args.spec} is valid — {len(pipeline.stages)} stages ({ids})\n")
        return EXIT_OK
    console.print(f"[green]ok[/]: {_esc(args.spec)} is valid — {len(pipeline.stages)} stages "
                  f"({ids})")
    return EXIT_OK


def cmd_plan(args: argparse.Namespace, pm: Any, console: Any) -> int:
    from rich.table import Table

    from lmforge.runner import Runner, resolve_run_dir

    pipeline = _validated(args, pm)
    run_dir = _checked_run_dir(pipeline, args.run_dir, resolve_run_dir, writable=False)
    runner = Runner(pipeline, pm, run_dir=run_dir, verify=args.verify)
    out = _console(stderr=False)
    table = Table(title=f"{_esc(pipeline.spec.name)}: {_esc(runner.run_dir)}", show_lines=False)
    for col in ("stage", "kind / plugin", "inputs", "action", "estimates"):
        table.add_column(col)
    for plan, status, estimate in runner.plan():
        inputs = ", ".join(f"{slot}←{src}" + (f".{o}" if len(pipeline.stage(src).outputs) > 1
                                              else "") for slot, (src, o) in plan.inputs.items())
        colour = {"reuse": "green", "resume": "yellow"}.get(status.action, "cyan")
        est = ", ".join(f"{k}={_human(v)}" for k, v in estimate.items())
        table.add_row(plan.id, _esc(f"{plan.component.stage_kind} / {plan.component.name}"),
                      _esc(inputs or "—"), f"[{colour}]{status.action}[/] "
                      f"({_esc(status.reason)})", _esc(est or "—"))
    out.print(table)
    return EXIT_OK


def _human(v: Any) -> str:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return str(v)
    for unit, div in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(v) >= div:
            return f"{v / div:.3g}{unit}"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def cmd_run(args: argparse.Namespace, pm: Any, console: Any) -> int:
    import os

    from lmforge.progress import Progress

    # Stages report progress through lmforge's own bars; datasets' per-map bars are noise.
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from lmforge.runner import Runner, resolve_run_dir

    pipeline = _validated(args, pm)
    _check_stage_options(pipeline, {"--force": args.force, "--only": [args.only],
                                    "--until": [args.until]})
    run_dir = _checked_run_dir(pipeline, args.run_dir, resolve_run_dir, writable=True)
    from lmforge import dist

    if args.nproc is not None and not dist.is_distributed():
        return _launch_workers(args, console)
    main_rank = dist.is_main()
    runner = Runner(pipeline, pm, run_dir=run_dir,
                    progress=Progress(enabled=not args.quiet and main_rank), force=set(args.force),
                    verify=args.verify)
    if not main_rank:  # rank 0 speaks for the run
        console.quiet = True
    console.print(f"[bold]{_esc(pipeline.spec.name)}[/] → {_esc(runner.run_dir)}"
                  + (f" ({dist.world_size()} ranks)" if dist.is_distributed() else ""))
    try:
        with _integrity_warnings(console):
            result = runner.run(only=args.only, until=args.until)
    except KeyboardInterrupt:
        _run_report(runner.run_dir, pipeline, console, announce=main_rank)
        console.print("[yellow]interrupted[/]: finished stages are kept; run the same command "
                      "again to resume")
        return EXIT_INTERRUPTED
    except LmforgeError:
        _run_report(runner.run_dir, pipeline, console, announce=main_rank)
        raise
    finally:
        dist.destroy()
    _summary(result, console, _run_report(runner.run_dir, pipeline, console))
    if not result.ran:
        console.print("nothing to do: every stage was reused (use --force STAGE to rerun one)")
    return EXIT_OK


@contextlib.contextmanager
def _integrity_warnings(console: Any) -> Iterator[None]:
    """Print each :class:`lmforge.errors.IntegrityWarning` (a corrupt checkpoint set aside, a
    stage run again because its outputs changed) as a ``warning:`` line when it happens; other
    warnings as Python prints them."""
    import warnings

    from lmforge.errors import IntegrityWarning

    with warnings.catch_warnings():
        warnings.simplefilter("always", IntegrityWarning)
        shown = warnings.showwarning

        def show(message: Any, category: Any, *args: Any, **kwargs: Any) -> None:
            if issubclass(category, IntegrityWarning):
                console.print(f"[yellow]warning:[/] {_esc(message)}", markup=True)
            else:
                shown(message, category, *args, **kwargs)

        warnings.showwarning = show
        yield


def _positive_int(text: str) -> int:
    """argparse type of ``--nproc``: an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _launch_workers(args: argparse.Namespace, console: Any) -> int:
    """``lmforge run --nproc N``: start N workers running the same command line (without
    ``--nproc``) through ``torch.distributed.run`` on this machine; wait for them."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    worker_argv = []
    skip = False
    for word in args.argv:
        if skip:
            skip = False
            continue
        if word == "--nproc":
            skip = True
            continue
        if word.startswith("--nproc="):
            continue
        worker_argv.append(word)
    launch = get_args_parser().parse_args(
        ["--standalone", "--nproc-per-node", str(args.nproc), "--module", "lmforge.cli",
         *worker_argv])
    try:
        run(launch)
    except ChildFailedError:
        return EXIT_FAILED  # the workers have reported what failed
    except (KeyboardInterrupt, SignalException):
        return EXIT_INTERRUPTED  # the launcher stopped the workers; rank 0 has said so
    return EXIT_OK


def _check_stage_options(pipeline: Any, options: dict[str, list[str | None]]) -> None:
    """Raise :class:`UsageError` if a stage-selecting option names no stage of ``pipeline``."""
    import difflib

    ids = [s.id for s in pipeline.stages]
    for option, values in options.items():
        for value in values:
            if value is None or value in ids:
                continue
            close = difflib.get_close_matches(value, ids, n=1)
            raise UsageError(f"{option} {value!r}: the spec has no stage with this id"
                             + (f"; did you mean {close[0]!r}?" if close else "")
                             + f" (stages: {', '.join(ids)})")


def _run_dir_problem(path: Path, writable: bool) -> str | None:
    """Why ``path`` cannot be used as a run folder (it or an ancestor is a file, a name is too
    long, no permission to create it), or None. Looks only; creates nothing."""
    import errno
    import os
    import stat

    for part in path.parts:
        if len(os.fsencode(part)) > 255:
            return f"the folder name {part[:40]!r}... is longer than 255 bytes"
    for folder in (path, *path.parents):
        try:
            mode = folder.stat().st_mode
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR):
                continue  # not there yet (or under a file, found further up)
            return f"{folder}: {exc.strerror or exc}"
        if not stat.S_ISDIR(mode):
            return ("it is a file, not a folder" if folder == path else
                    f"it lies under {folder}, which is a file, not a folder")
        if writable and not os.access(folder, os.W_OK | os.X_OK):
            return f"{folder} is not writable"
        return None
    return None  # pragma: no cover - the root exists


def _checked_run_dir(pipeline: Any, option: str | None, resolve: Any, writable: bool) -> Path:
    """The run folder ``resolve(pipeline, option)``, or :class:`UsageError` / :class:`SpecError`
    naming where it came from (``--run-dir``, the spec's ``run_dir`` or ``name``) if it cannot be
    one. ``writable``: it is created here (the first thing ``run`` writes), so that a folder the
    system refuses is reported like the others instead of failing inside the runner."""
    from lmforge.errors import SpecIssue

    try:
        path = resolve(pipeline, option)
        problem = _run_dir_problem(path, writable)
        if problem is None and writable:
            path.mkdir(parents=True, exist_ok=True)
    except (OSError, ValueError, RuntimeError) as exc:
        path = Path(option or pipeline.spec.run_dir or pipeline.spec.name)
        problem = getattr(exc, "strerror", None) or str(exc)
    if problem is None:
        return path
    if option:
        raise UsageError(f"--run-dir {option}: cannot use {path} as the run folder: {problem}; "
                         f"choose another folder")
    key = "run_dir" if pipeline.spec.run_dir else "name"
    file, line = pipeline.source.where((key,))
    what = "run_dir" if key == "run_dir" else "the default run folder runs/<name>"
    raise SpecError([SpecIssue(f"cannot use {path} as the run folder ({what}): {problem}",
                               path=key, file=file, line=line,
                               hint="set run_dir (or --run-dir) to another folder")])


def _summary(result: Any, console: Any, report: Path | None = None) -> None:
    """The run summary (see :mod:`lmforge.summary`), on stdout; not on non-main ranks (whose
    ``console`` is quiet)."""
    if getattr(console, "quiet", False):
        return
    from lmforge.summary import print_summary

    print_summary(result, _console(stderr=False), report=report)


def _run_report(run_dir: Path, pipeline: Any, console: Any, announce: bool = False
                ) -> Path | None:
    """Write the run report (see :mod:`lmforge.report`) on the main rank; its HTML path, or
    None. Never fails the run: a problem is a warning. ``announce``: say where it is (a failed or
    interrupted run prints no summary)."""
    from lmforge import dist

    if not dist.is_main():
        return None
    try:
        from lmforge.report import write_report

        files = write_report(run_dir, stage_ids=[s.id for s in pipeline.stages],
                             title=pipeline.spec.name)
    except KeyboardInterrupt:  # a (second) Ctrl-C while it is written: leave it
        console.print("[yellow]warning:[/] the run report was not written (interrupted); "
                      f"`lmforge report {_esc(run_dir)}` writes it", markup=True)
        return None
    except Exception as exc:  # noqa: BLE001 - the run's outcome stands without its report
        console.print(f"[yellow]warning:[/] could not write the run report: "
                      f"{_esc(type(exc).__name__)}: {_esc(exc)}", markup=True)
        return None
    if announce:
        console.print(f"run report: {_esc(files.html)}")
    return files.html


def cmd_report(args: argparse.Namespace, console: Any) -> int:
    from lmforge.report import NotARunFolder, write_report

    try:
        files = write_report(args.run_dir, args.output)
    except NotARunFolder as exc:
        raise UsageError(str(exc)) from None
    out = _console(stderr=False)
    out.print(f"wrote {_esc(files.html)}\n  and {_esc(files.markdown)} "
              f"({len(files.plots)} plot{'s' if len(files.plots) != 1 else ''} in "
              f"{_esc(files.markdown.parent / 'plots')})")
    return EXIT_OK


def cmd_schema(args: argparse.Namespace, pm: Any, console: Any) -> int:
    if args.first_party:
        from lmforge.plugins import PluginManager

        pm = PluginManager.load_first_party(trace=bool(args.trace_hooks))
    pm.check_usable()
    if args.format == "markdown":
        from lmforge.reference import markdown_reference

        text = markdown_reference(pm)
    else:
        schema = pm.assembler().pipeline_model().model_json_schema()
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["title"] = "lmforge pipeline"
        text = json.dumps(schema, indent=2) + "\n"
    if args.output:
        from lmforge.fsutil import atomic_write_text

        atomic_write_text(args.output, text)
        console.print(f"wrote {args.output}")
    else:
        sys.stdout.write(text)
    return EXIT_OK


def plugins_report(pm: Any) -> dict[str, Any]:
    """What ``plugins list`` shows, as data (also its ``--json`` output)."""
    from lmforge.catalog import load_catalog

    installed = {p.distribution for p in pm.plugins.values()} | {f.distribution for f in pm.failures}
    names = set(pm.plugins) | {f.name for f in pm.failures}
    available = [e for e in load_catalog() if e.distribution not in installed
                 and not (set(e.entry_points) & names)]
    return {
        "plugins": [{"name": p.name, "distribution": p.distribution, "version": p.version,
                     "module": p.module,
                     "components": [f"{c.kind}/{c.name}" for c in p.components]}
                    for p in sorted(pm.plugins.values(), key=lambda p: p.name)],
        "failures": [f.__dict__ for f in pm.failures],
        "conflicts": list(pm.conflicts),
        "available": [{"distribution": e.distribution, "requirement": e.requirement,
                       "description": e.description,
                       "components": [f"{c.kind}/{c.name}" for c in e.components]}
                      for e in available],
    }


def cmd_plugins(args: argparse.Namespace, pm: Any, console: Any) -> int:
    if args.plugins_command == "info":
        return _plugins_info(args.name, pm)
    report = plugins_report(pm)
    if getattr(args, "json", False):
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
        return EXIT_OK
    from rich.table import Table

    out = _console(stderr=False)
    table = Table(title="installed plugins")
    for col in ("plugin", "distribution", "version", "components"):
        table.add_column(col)
    for p in report["plugins"]:
        table.add_row(p["name"], p["distribution"], p["version"], ", ".join(p["components"]))
    out.print(table)
    for f in pm.failures:
        out.print(f"[red]failed[/]: {f.format()}", markup=True)
    for c in report["conflicts"]:
        out.print(f"[red]conflict[/]: {c}", markup=True)
    if report["available"]:
        avail = Table(title="in the catalog, not installed")
        for col in ("distribution", "install with", "components"):
            avail.add_column(col)
        for a in report["available"]:
            avail.add_row(a["distribution"], f"pip install '{a['requirement']}'",
                          ", ".join(a["components"]))
        out.print(avail)
    return EXIT_OK


def _plugins_info(name: str, pm: Any) -> int:
    from rich.table import Table

    out = _console(stderr=False)
    if name in pm.plugins:
        info = pm.plugins[name]
        out.print(f"[bold]{info.name}[/] — {info.distribution} {info.version} ({info.module})")
        components = list(info.components)
        from lmforge.commands import collect_commands

        commands, _ = collect_commands(pm)
        for cmd in sorted((c for cs in commands.values() for c in cs if c.plugin == name),
                          key=lambda c: c.name):
            out.print(f"\n[bold]command[/] [cyan]lmforge {_esc(cmd.name)}[/] — {_esc(cmd.help)} "
                      f"[dim](lmforge {_esc(cmd.name)} --help)[/]")
    else:
        components = _find_components(name, pm)
    for c in components:
        out.print(f"\n[bold]{c.kind}[/] [cyan]{c.name}[/] — {c.description} "
                  f"[dim]({c.plugin}, {c.distribution} {c.version})[/]")
        if c.stage_kind:
            ins = "depend on config" if callable(c.inputs) else ", ".join(
                f"{k} ({'list of ' if v.many else ''}{' | '.join(v.accepts)}"
                f"{'' if v.required else ', optional'})" for k, v in c.inputs.items())
            outs = c.outputs if isinstance(c.outputs, dict) else "depends on config"
            out.print(f"  inputs: {ins or 'none'}\n  outputs: {outs}")
        from rich.text import Text

        from lmforge.reference import config_keys

        model = pm.component_config_model(c.kind, c.name)
        table = Table(show_header=True, box=None, padding=(0, 2))
        for col in ("key", "type", "default", "description"):
            table.add_column(col)
        skip = () if c.stage_kind else ("type",)
        for k in config_keys(model, skip):  # Text: '[...]' in a description is not markup
            table.add_row(*(Text(v) for v in (k.key, k.type, k.default, k.description)))
        out.print(table)
    return EXIT_OK


def _find_components(name: str, pm: Any) -> list[Any]:
    """Components named ``name``: ``kind/name`` as ``plugins list`` prints it
    (``filter/gopher``, ``stage:train/pretrain``, also ``train/pretrain``) or a bare component
    name (every kind). :class:`PluginError` with a did-you-mean when there is none."""
    import difflib

    if "/" in name:
        kind, _, cname = name.rpartition("/")
        found = [c for c in pm.components() if c.name == cname
                 and kind in (c.kind, f"stage:{c.stage_kind}", c.stage_kind)]
    else:
        found = [c for c in pm.components() if c.name == name]
    if not found:
        options = (list(pm.plugins) + [c.name for c in pm.components()]
                   + [f"{c.kind}/{c.name}" for c in pm.components()])
        close = difflib.get_close_matches(name, options, n=1)
        raise PluginError(f"no plugin or component named {name!r}"
                          + (f"; did you mean {close[0]!r}?" if close else "")
                          + " (`lmforge plugins list` shows the names)")
    return found


def cmd_new_plugin(args: argparse.Namespace, console: Any) -> int:
    from lmforge.scaffold import create_plugin

    dest = args.dir or Path.cwd() / f"lmforge-{args.name}"
    root = create_plugin(args.name, dest, force=args.force)
    console.print(f"wrote plugin package {root}\n  next: pip install -e {root} && "
                  f"pytest {root / 'tests'} && lmforge plugins list")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    # Overrides may come after options (`run spec -q a.b=1`), which argparse's positional
    # handling does not allow: collect leftover KEY=VALUE words as overrides.
    argv = list(sys.argv[1:] if argv is None else argv)
    warnings: list[str] = []
    try:
        parser, pm = _parser_with_plugin_commands(argv, warnings)
    except (UsageError, PluginError) as exc:
        _console().print(f"[red bold]error:[/] {_esc(exc)}", markup=True)
        return EXIT_SPEC
    args, extra = parser.parse_known_args(argv)
    args.argv = argv
    if extra:
        bad = [w for w in extra if w.startswith("-") or "=" not in w]
        if bad or not hasattr(args, "overrides"):
            parser.error(f"unrecognized arguments: {' '.join(bad or extra)}")
        args.overrides = [*args.overrides, *extra]
    console = _console()
    if args.command is None:
        parser.print_help()
        return EXIT_SPEC
    if args.command == "plugins" and args.plugins_command is None:
        args.plugins_command = "list"
    try:
        if args.command == "new-plugin":
            return cmd_new_plugin(args, console)
        if args.command == "report":  # reads a run folder: no plugin needed
            return cmd_report(args, console)
        pm = pm or _load_plugins(args)
        if args.command != "plugins":
            _warn_failures(pm, console)
        for warning in warnings:
            console.print(f"[yellow]warning:[/] {_esc(warning)}", markup=True)
        if getattr(args, "plugin_run", None) is not None:  # a plugin's command
            return int(args.plugin_run(args, pm))
        handler = {"run": cmd_run, "validate": cmd_validate, "plan": cmd_plan,
                   "schema": cmd_schema, "plugins": cmd_plugins,
                   "serve": cmd_serve}[args.command]
        return handler(args, pm, console)
    except SpecError as exc:
        _print_spec_error(exc, console)
        return EXIT_SPEC
    except StageFailed as exc:
        console.print(f"[red bold]error:[/] {_esc(exc)}", markup=True)
        log = getattr(exc, "log_path", None)
        if log:
            console.print(f"  traceback: {_esc(log)}")
        console.print("  earlier stages' outputs are kept; fix the cause and run again")
        return EXIT_FAILED
    except PluginError as exc:
        console.print(f"[red bold]plugin error:[/] {_esc(exc)}", markup=True)
        return EXIT_SPEC
    except UsageError as exc:
        console.print(f"[red bold]error:[/] {_esc(exc)}", markup=True)
        return EXIT_SPEC
    except LmforgeError as exc:
        console.print(f"[red bold]error:[/] {_esc(exc)}", markup=True)
        return EXIT_SPEC if args.command in ("validate", "plan", "schema") else EXIT_FAILED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
