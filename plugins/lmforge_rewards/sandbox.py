"""The ``subprocess`` sandbox: each program runs in a fresh Python subprocess with limits.

Per call (:meth:`SubprocessSandbox.run_python`):

* a temporary working directory holding ``main.py`` and the caller's ``files``, deleted after;
* ``python -I -S _boot.py``: isolated mode (no ``PYTHON*`` variables, no user site, script
  directory not on the path) and no ``site`` (no third-party packages: the standard library
  only); ``_boot.py`` sets the rlimits and runs ``main.py`` as ``__main__``;
* an environment built from an allow-list (``PATH``, ``LANG``, ``LC_ALL``, ``HOME`` and
  ``TMPDIR`` pointing at the work directory, ``PYTHONHASHSEED``) — nothing else is inherited;
* rlimits: CPU seconds, address space, file size, open files, processes, no core dumps;
* isolation (``isolation: auto`` picks the strongest that works, probed once):
  ``namespaces`` runs the program under ``unshare --user --net --pid --fork --kill-child``:
  a network namespace with no interface but a down loopback (no network at all), and a PID
  namespace whose processes the kernel kills when its first process ends — so nothing the
  program forks, even with ``setsid``, outlives the run. When lmforge runs as root the
  program runs as ``nobody`` (RLIMIT_NPROC binds no root process, and ``nobody`` cannot read
  root's files). ``process`` (no user namespaces) keeps the rlimits, runs the program in its
  own session and blocks network calls with an audit hook only;
* a wall-clock deadline: the process group is killed (SIGKILL) when it passes, when the
  output passes ``max_output_bytes``, or when the run ends; in ``process`` mode a sweep also
  kills processes that left the group but carry the run's token in their environment.

The limits and what this does *not* protect against are in ``docs/plugins/rewards.md``.
Thread-safe: ``max_concurrent`` runs at once, more callers wait.
"""

from __future__ import annotations

import os
import pwd
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

from lmforge.sandbox import SandboxResult
from lmforge_rewards.config import SubprocessSandboxConfig

BOOT = Path(__file__).with_name("_boot.py")
MEMORY_EXIT = 86  # _boot.py's exit status after a MemoryError
CPU_EXIT = 87  # ... and after SIGXCPU (the CPU-time limit)
_TOKEN_VAR = "LMFORGE_SANDBOX_RUN"
_probe_lock = threading.Lock()
_probed: dict[tuple[str, int | None], bool] = {}


def _nobody() -> tuple[int, int] | None:
    """``(uid, gid)`` to run as when lmforge is root, else None (run as ourselves)."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam("nobody")
        return entry.pw_uid, entry.pw_gid
    except KeyError:
        return 65534, 65534


def _unshare_prefix(unshare: str) -> list[str]:
    return [unshare, "--user", "--map-root-user", "--net", "--pid", "--fork", "--kill-child"]


def _works(command: list[str], ids: tuple[int, int] | None) -> bool:
    """Whether ``command`` runs and exits 0 (as ``ids`` when given); probed once per process."""
    key = (tuple(command), ids)
    with _probe_lock:
        if key not in _probed:
            try:
                done = subprocess.run(
                    command, capture_output=True, timeout=20, cwd="/",
                    env={"PATH": os.defpath},
                    **({"user": ids[0], "group": ids[1], "extra_groups": []} if ids else {}))
                _probed[key] = done.returncode == 0
            except (OSError, subprocess.SubprocessError):
                _probed[key] = False
        return _probed[key]


def namespaces_available(unshare: str | None = None) -> bool:
    """Whether ``unshare --user --net --pid`` starts this Python here (probed once)."""
    unshare = unshare or shutil.which("unshare")
    if not unshare:
        return False
    return _works([*_unshare_prefix(unshare), sys.executable, "-I", "-S", "-c", "pass"], None)


def run_as(prefix: list[str]) -> tuple[int, int] | None:
    """``(uid, gid)`` of ``nobody`` when lmforge runs as root and ``nobody`` can start this
    Python (under ``prefix``); else None: the program runs as lmforge's own user."""
    ids = _nobody()
    if ids is None:
        return None
    ok = _works([*prefix, sys.executable, "-I", "-S", "-c", "pass"], ids)
    return ids if ok else None


class SubprocessSandbox:
    """Implements :class:`lmforge.sandbox.Sandbox` with subprocesses (see the module doc)."""

    def __init__(self, config: SubprocessSandboxConfig) -> None:
        self.config = config
        unshare = shutil.which("unshare")
        available = config.isolation != "process" and namespaces_available(unshare)
        if config.isolation == "namespaces" and not available:
            raise RuntimeError(
                "sandbox isolation 'namespaces' needs 'unshare --user --net --pid' (util-linux) "
                "and unprivileged user namespaces, which this machine does not allow; install "
                "util-linux / enable user namespaces (sysctl kernel.unprivileged_userns_clone=1,"
                " user.max_user_namespaces > 0), or set isolation: process (weaker: see "
                "docs/plugins/rewards.md)")
        self.isolation = "namespaces" if available else "process"
        self._prefix = _unshare_prefix(unshare) if available else []  # type: ignore[arg-type]
        self._ids = run_as(self._prefix)
        self._slots = threading.BoundedSemaphore(config.max_concurrent)
        self._live: set[subprocess.Popen[bytes]] = set()
        self._lock = threading.Lock()
        self._closed = False

    @property
    def workers(self) -> int:
        """How many programs run at once (what :func:`lmforge.sandbox.run_many` uses)."""
        return self.config.max_concurrent

    @property
    def user(self) -> str:
        """Who the programs run as: ``nobody``, or lmforge's own user (``uid N``)."""
        return "nobody" if self._ids is not None else f"uid {os.geteuid()}"

    def describe(self) -> str:
        c = self.config
        return (f"subprocess sandbox ({self.isolation}, as {self.user}): {c.timeout_s:g} s wall, "
                f"{c.cpu_s} s "
                f"CPU, {c.memory_mb} MiB, {c.max_processes} processes, {c.max_output_bytes} "
                f"output bytes, {c.max_concurrent} at once")

    # -- running -------------------------------------------------------------------------------
    def run_python(self, source: str, *, stdin: str | None = None,
                   files: Mapping[str, str] | None = None,
                   timeout_s: float | None = None) -> SandboxResult:
        if self._closed:
            raise RuntimeError("this sandbox was closed")
        timeout = float(timeout_s if timeout_s is not None else self.config.timeout_s)
        with self._slots:
            work = Path(tempfile.mkdtemp(prefix="lmforge-sandbox-", dir=self.config.tmp_dir))
            try:
                self._write(work, source, files or {})
                return self._run(work, stdin, timeout)
            finally:
                shutil.rmtree(work, ignore_errors=True)

    def _write(self, work: Path, source: str, files: Mapping[str, str]) -> None:
        for name, text in files.items():
            rel = PurePosixPath(name)
            if rel.is_absolute() or ".." in rel.parts or not rel.parts or str(rel) == "main.py":
                raise ValueError(f"sandbox file name {name!r} must be a relative path inside "
                                 f"the work directory (not main.py)")
            dst = work.joinpath(*rel.parts)
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_text(text, encoding="utf-8")
        (work / "main.py").write_text(source, encoding="utf-8")
        if self._ids is not None:  # the program runs as nobody: give it its directory
            for path in [work, *work.rglob("*")]:
                os.chown(path, *self._ids)

    def _command(self) -> list[str]:
        c = self.config
        limits = (c.cpu_s, c.memory_mb * 2**20, c.max_file_bytes, c.max_open_files,
                  c.max_processes)
        return [*self._prefix, sys.executable, "-I", "-S", str(BOOT), *map(str, limits)]

    def _env(self, work: Path, token: str) -> dict[str, str]:
        env = {"PATH": os.defpath, "HOME": str(work), "TMPDIR": str(work),
               "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "PYTHONHASHSEED": "0",
               "PYTHONIOENCODING": "utf-8", _TOKEN_VAR: token}
        env.update(self.config.env)
        return env

    def _run(self, work: Path, stdin: str | None, timeout: float) -> SandboxResult:
        token = uuid.uuid4().hex
        start = time.monotonic()
        kw = ({"user": self._ids[0], "group": self._ids[1], "extra_groups": []}
              if self._ids is not None else {})
        try:
            proc = subprocess.Popen(
                self._command(), cwd=work, env=self._env(work, token), stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                close_fds=True, **kw)
        except OSError as exc:
            return SandboxResult(None, "", f"the sandbox could not start: {exc}", None,
                                 time.monotonic() - start)
        with self._lock:
            self._live.add(proc)
        try:
            out, err, limit = self._collect(proc, stdin, start + timeout)
        finally:
            self._kill(proc, token)
            with self._lock:
                self._live.discard(proc)
        code = proc.returncode
        text_err = err.decode("utf-8", "replace")
        if limit is None:
            limit = self._classify(code, text_err)
        return SandboxResult(code, out.decode("utf-8", "replace"), text_err, limit,
                             time.monotonic() - start)

    def _collect(self, proc: subprocess.Popen[bytes], stdin: str | None, deadline: float
                 ) -> tuple[bytes, bytes, str | None]:
        """Read stdout/stderr until the process ends, the deadline passes or the output
        passes its cap; returns what was read and the limit that stopped it, if any."""
        cap = self.config.max_output_bytes
        assert proc.stdin and proc.stdout and proc.stderr
        feeder = threading.Thread(target=_feed, args=(proc.stdin, (stdin or "").encode()),
                                  daemon=True)
        feeder.start()
        bufs = {proc.stdout: bytearray(), proc.stderr: bytearray()}
        limit = None
        with selectors.DefaultSelector() as sel:
            for f in bufs:
                sel.register(f, selectors.EVENT_READ)
            while sel.get_map():
                left = deadline - time.monotonic()
                if left <= 0:
                    limit = "time"
                    break
                events = sel.select(timeout=min(left, 0.2))
                if not events and proc.poll() is not None:
                    break  # ended; what still holds the pipes open is killed below
                for key, _ in events:
                    chunk = os.read(key.fd, 65536)
                    if not chunk:
                        sel.unregister(key.fileobj)
                        continue
                    buf = bufs[key.fileobj]  # type: ignore[index]
                    buf += chunk
                    if len(buf) > cap:
                        del buf[cap:]
                        limit = "output"
                if limit:
                    break
        if limit is None:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                limit = "time"
        return bytes(bufs[proc.stdout]), bytes(bufs[proc.stderr]), limit

    def _kill(self, proc: subprocess.Popen[bytes], token: str) -> None:
        """End the run's process group (and, with namespaces, its whole PID namespace: the
        kernel kills it with ``unshare``'s child); in ``process`` mode also every process
        that carries the run's token."""
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        proc.wait()
        for f in (proc.stdin, proc.stdout, proc.stderr):
            if f is not None:
                f.close()
        if self.isolation == "process":
            _sweep(f"{_TOKEN_VAR}={token}".encode())

    @staticmethod
    def _classify(code: int | None, stderr: str) -> str | None:
        if code == MEMORY_EXIT or (code and stderr.rstrip().endswith("MemoryError")):
            return "memory"
        if code in (CPU_EXIT, -signal.SIGXCPU):
            return "time"
        if code and ("BlockingIOError: [Errno 11]" in stderr
                     or "Resource temporarily unavailable" in stderr):
            return "processes"
        return None

    def close(self) -> None:
        self._closed = True
        with self._lock:
            live = list(self._live)
        for proc in live:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


def _feed(pipe: object, data: bytes) -> None:
    try:
        if data:
            pipe.write(data)  # type: ignore[attr-defined]
        pipe.close()  # type: ignore[attr-defined]
    except (BrokenPipeError, OSError, ValueError):
        pass


def _sweep(marker: bytes) -> None:
    """SIGKILL every process whose environment holds ``marker`` (escaped the group)."""
    for _ in range(3):
        found = False
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/environ", "rb") as f:
                    env = f.read()
            except OSError:
                continue
            if marker in env.split(b"\0"):
                found = True
                try:
                    os.kill(int(entry.name), signal.SIGKILL)
                except OSError:
                    pass
        if not found:
            return
        time.sleep(0.05)


def build(config: SubprocessSandboxConfig) -> SubprocessSandbox:
    """The ``sandbox`` factory."""
    return SubprocessSandbox(config)
