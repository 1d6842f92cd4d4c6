"""The Weights & Biases tracker: lifecycle hook implementations for one pipeline run.

Contract (what the tracker guarantees, whatever W&B does):

* **never prompts, never fails the run**: the mode is always passed explicitly (``auto`` picks
  ``online`` only when credentials exist), ``wandb`` is imported at pipeline start, and every W&B
  call is guarded: the first error prints one warning and turns the tracker off for the run
  (metrics still go to each stage's ``metrics.jsonl``). An online init that fails (network)
  or gets no answer within ``init_timeout`` seconds falls back to offline once, with one
  warning line.
* **one W&B run per pipeline run**, files under ``<run_dir>/wandb/``; offline runs are uploaded
  later with ``wandb sync <run_dir>/wandb/offline-run-*`` (the exact command is printed at the
  end).
* metrics are logged as ``{stage_id}/{metric}`` against a per-stage x-axis ``{stage_id}/step``
  (``define_metric``), so stages with their own step counters share one run;
* each stage's status, seconds and headline metrics go into the run summary under
  ``{stage_id}/...``; checkpoint paths are logged as text (never uploaded).
* only the main process (``RANK`` unset or 0) logs.
"""

from __future__ import annotations

import netrc
import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from lmforge import hookimpl
from lmforge_wandb.config import WandbConfig

_PREFIX = "wandb tracker"


def _warn(message: str) -> None:
    sys.stderr.write(f"warning: {_PREFIX}: {message}\n")


def has_credentials(env: Mapping[str, str] | None = None) -> bool:
    """Whether W&B credentials exist: ``WANDB_API_KEY``, an identity token, or a netrc entry for
    the W&B host (what ``wandb login`` writes). Never contacts the server."""
    env = os.environ if env is None else env
    if env.get("WANDB_API_KEY", "").strip() or env.get("WANDB_IDENTITY_TOKEN_FILE", "").strip():
        return True
    host = urlparse(env.get("WANDB_BASE_URL") or "https://api.wandb.ai").hostname or ""
    path = env.get("NETRC") or os.path.join(os.path.expanduser("~"), ".netrc")
    try:
        auth = netrc.netrc(path).authenticators(host)
    except (OSError, netrc.NetrcParseError):
        return False
    return bool(auth and auth[2])


def resolve_mode(mode: str, env: Mapping[str, str] | None = None) -> tuple[str, str]:
    """The W&B mode to use for config ``mode``, and a note to print ("" when none is needed).

    ``auto``: ``WANDB_MODE`` if set (``dryrun`` means offline), ``disabled`` if
    ``WANDB_DISABLED`` is true, else ``online`` with credentials and ``offline`` without.
    ``online`` without credentials becomes ``offline`` (W&B would otherwise prompt for a key).
    """
    env = os.environ if env is None else env
    if mode == "auto":
        if env.get("WANDB_DISABLED", "").strip().lower() in {"1", "true", "yes"}:
            return "disabled", ""
        env_mode = env.get("WANDB_MODE", "").strip().lower()
        if env_mode in {"online", "offline", "disabled"}:
            mode = env_mode
        elif env_mode == "dryrun":
            return "offline", ""
        else:
            return ("online" if has_credentials(env) else "offline"), ""
    if mode == "online" and not has_credentials(env):
        return "offline", ("mode is 'online' but no W&B API key is configured (set "
                           "WANDB_API_KEY or run `wandb login`); logging offline instead")
    return mode, ""


def _first_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message, shortened (W&B's run over several)."""
    text = (str(exc).strip().splitlines() or [""])[0]
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float))


class WandbTracker:
    """Pluggy plugin object registered by the runner for one run (``factory(config, run_dir)``)."""

    def __init__(self, config: WandbConfig, run_dir: Path) -> None:
        self.config = config
        self.run_dir = Path(run_dir)
        self.run: Any = None  # the wandb Run while active
        self.mode: str | None = None  # the mode actually used
        self.disabled = False
        self._stages: set[str] = set()

    # -- guard -----------------------------------------------------------------------------
    @property
    def active(self) -> bool:
        return self.run is not None and not self.disabled

    @contextmanager
    def _guard(self, what: str) -> Iterator[None]:
        """Turn any exception into one warning and switch the tracker off for the run."""
        try:
            yield
        except Exception as exc:  # noqa: BLE001 - a tracker must never fail the run
            self._disable(f"{what} failed ({type(exc).__name__}: {exc})")

    def _disable(self, why: str) -> None:
        if not self.disabled:
            _warn(f"{why}; W&B logging is off for the rest of this run (metrics are still in "
                  f"each stage's metrics.jsonl)")
        self.disabled = True
        run, self.run = self.run, None
        if run is not None:
            try:
                run.finish(exit_code=1)
            except Exception:  # noqa: BLE001, S110 - already reported; just release W&B
                pass

    # -- lifecycle hooks ---------------------------------------------------------------------
    @hookimpl
    def lmforge_pipeline_start(self, pipeline: Any, run_dir: Path, run_id: str) -> None:
        if int(os.environ.get("RANK", "0") or 0) != 0:
            self.disabled = True  # only the main process logs
            return
        self.run_dir = Path(run_dir)
        mode, note = resolve_mode(self.config.mode)
        if mode == "disabled":
            self.disabled = True
            return
        if note:
            _warn(note)
        try:
            import wandb
        except Exception as exc:  # noqa: BLE001 - not installed or broken
            self._disable(f"cannot import wandb ({type(exc).__name__}: {exc}); "
                          f"pip install wandb")
            return
        try:
            self.run = self._init(wandb, mode, pipeline, run_id)
            self.mode = mode
        except Exception as exc:  # noqa: BLE001
            if mode != "online":
                self._disable(f"wandb.init failed ({type(exc).__name__}: {_first_line(exc)})")
                return
            _warn(self._online_failure(exc))
            with self._guard("offline wandb.init"):
                self.run = self._init(wandb, "offline", pipeline, run_id)
                self.mode = "offline"

    def _online_failure(self, exc: BaseException) -> str:
        """One line: why the online run could not start, and that it is logged offline."""
        server = os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai"
        text = _first_line(exc)
        if "timed out" in text.lower() or "deadline" in text.lower():
            why = (f"W&B at {server} did not answer within {self.config.init_timeout:g} s "
                   f"(init_timeout)")
        else:
            why = f"could not start an online W&B run at {server} ({type(exc).__name__}: {text})"
        return (f"{why}; logging offline under {self.run_dir / 'wandb'} instead (upload later "
                f"with `wandb sync`)")

    def _init(self, wandb: Any, mode: str, pipeline: Any, run_id: str) -> Any:
        pipeline_name = str(getattr(pipeline, "name", "") or "lmforge")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        kwargs: dict[str, Any] = dict(
            project=self.config.project or os.environ.get("WANDB_PROJECT") or pipeline_name,
            entity=self.config.entity, name=self.config.name or pipeline_name,
            group=self.config.group, tags=list(self.config.tags) or None, job_type="lmforge",
            dir=str(self.run_dir), mode=mode, settings=self._settings(wandb, mode),
            config=self._run_config(pipeline, run_id) if self.config.log_config else None,
        )
        try:
            return wandb.init(reinit="create_new", **kwargs)  # independent of any user run
        except (TypeError, ValueError) as exc:
            if "reinit" not in str(exc) and "create_new" not in str(exc):
                raise
            return wandb.init(reinit=True, **kwargs)  # wandb < 0.19.10

    def _settings(self, wandb: Any, mode: str) -> Any:
        wanted: dict[str, Any] = {
            "mode": mode, "silent": True, "console": "off", "save_code": False,
            "init_timeout": float(self.config.init_timeout),
            "disable_code": True, "disable_job_creation": True,
            "x_disable_stats": not self.config.system_metrics,
            "_disable_stats": not self.config.system_metrics,  # wandb < 0.19
        }
        known = set(getattr(wandb.Settings, "model_fields", {}) or {})
        if known:
            wanted = {k: v for k, v in wanted.items() if k in known}
        else:  # pre-pydantic Settings: pass only what every version accepts
            wanted = {k: wanted[k] for k in ("mode", "silent", "console")}
        return wandb.Settings(**wanted)

    def _run_config(self, pipeline: Any, run_id: str) -> dict[str, Any]:
        dump = pipeline.model_dump(mode="json") if hasattr(pipeline, "model_dump") else {}
        stages = {}
        for s in dump.get("stages", []):
            if isinstance(s, dict) and "id" in s:
                stages[s["id"]] = {k: v for k, v in s.items() if k != "id"}
        return {"pipeline": dump.get("name"), "seed": dump.get("seed"), "stages": stages,
                "trackers": dump.get("trackers", []),
                "lmforge": {"run_id": run_id, "run_dir": str(self.run_dir)}}

    def _define_stage(self, stage_id: str) -> None:
        if stage_id in self._stages:
            return
        self.run.define_metric(f"{stage_id}/step", hidden=True)
        self.run.define_metric(f"{stage_id}/*", step_metric=f"{stage_id}/step")
        self._stages.add(stage_id)

    @hookimpl
    def lmforge_stage_start(self, stage_id: str, plugin: str, resumed: bool) -> None:
        if not self.active:
            return
        with self._guard("stage start"):
            self._define_stage(stage_id)
            self.run.summary.update({f"{stage_id}/status": "running",
                                     f"{stage_id}/plugin": plugin,
                                     f"{stage_id}/resumed": bool(resumed)})

    @hookimpl
    def lmforge_metrics(self, stage_id: str, step: int, metrics: Mapping[str, Any]) -> None:
        if not self.active:
            return
        with self._guard("logging metrics"):
            self._define_stage(stage_id)
            data = {f"{stage_id}/{k}": v for k, v in metrics.items() if _is_number(v)}
            if data:
                data[f"{stage_id}/step"] = int(step)
                self.run.log(data)

    @hookimpl
    def lmforge_checkpoint_saved(self, stage_id: str, step: int, path: Path) -> None:
        if not self.active:
            return
        with self._guard("logging a checkpoint"):
            self._define_stage(stage_id)
            self.run.log({f"{stage_id}/checkpoint": str(path), f"{stage_id}/step": int(step)})
            self.run.summary.update({f"{stage_id}/last_checkpoint": str(path),
                                     f"{stage_id}/last_checkpoint_step": int(step)})

    @hookimpl
    def lmforge_failure(self, stage_id: str, error: BaseException) -> None:
        if not self.active:
            return
        with self._guard("recording a failure"):
            self.run.summary[f"{stage_id}/error"] = f"{type(error).__name__}: {error}"[:2000]

    @hookimpl
    def lmforge_stage_end(self, stage_id: str, status: str, manifest: Mapping[str, Any]) -> None:
        if not self.active:
            return
        with self._guard("stage summary"):
            summary: dict[str, Any] = {f"{stage_id}/status": status}
            if manifest.get("seconds") is not None:
                summary[f"{stage_id}/seconds"] = manifest["seconds"]
            for k, v in (manifest.get("metrics") or {}).items():
                summary[f"{stage_id}/{k}"] = v
            self.run.summary.update(summary)

    @hookimpl
    def lmforge_pipeline_end(self, run_dir: Path, status: str,
                             summary: Mapping[str, Any]) -> None:
        if not self.active:
            return
        run = self.run
        with self._guard("run summary"):
            flat: dict[str, Any] = {"lmforge/status": status}
            for stage_id, info in summary.items():
                for k, v in (info or {}).items():
                    flat[f"{stage_id}/{k}"] = v
            run.summary.update(flat)
        if not self.active:
            return
        offline_dir = getattr(run, "dir", None)
        with self._guard("wandb finish"):
            run.finish(exit_code=0 if status == "complete" else 1)
            self.run = None
        if self.mode == "offline" and offline_dir:
            run_folder = Path(offline_dir).parent  # <run_dir>/wandb/offline-run-*/files
            sys.stderr.write(f"wandb: offline run saved in {run_folder}\n"
                             f"wandb: upload it with: wandb sync {run_folder}\n")
