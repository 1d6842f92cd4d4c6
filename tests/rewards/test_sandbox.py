"""The ``subprocess`` sandbox: limits end runaway programs, no network, no secrets, nothing
left behind."""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

import pytest

from lmforge.sandbox import SandboxJob, run_many
from lmforge_rewards.config import SubprocessSandboxConfig
from lmforge_rewards.sandbox import BOOT, SubprocessSandbox, namespaces_available


@pytest.fixture(scope="module", params=["namespaces", "process"])
def sandbox(request):
    """Both isolation levels: 'namespaces' where the machine allows user namespaces, and the
    'process' fallback (rlimits, own session, audit hook, token sweep)."""
    if request.param == "namespaces" and not namespaces_available():
        pytest.skip("user namespaces are not available here")
    sb = SubprocessSandbox(SubprocessSandboxConfig(
        timeout_s=4, cpu_s=3, memory_mb=256, max_processes=12, isolation=request.param))
    assert sb.isolation == request.param
    yield sb
    sb.close()


def _sandbox_processes() -> list[int]:
    """Pids of live processes started from the sandbox's boot script."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                cmd = f.read()
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                state = f.read().rsplit(b")", 1)[1].split()[0]
        except OSError:
            continue
        if str(BOOT).encode() in cmd and state != b"Z":
            found.append(int(entry.name))
    return found


def test_runs_a_program_with_stdin_and_files(sandbox):
    r = sandbox.run_python("import helper, sys\nprint(helper.twice(int(sys.stdin.read())))",
                           stdin="21", files={"helper.py": "def twice(x):\n    return 2 * x\n"})
    assert r.ok and r.stdout == "42\n" and r.limit is None
    bad = sandbox.run_python("raise SystemExit(3)")
    assert bad.returncode == 3 and not bad.ok and bad.limit is None
    with pytest.raises(ValueError, match="relative path"):
        sandbox.run_python("pass", files={"../escape.py": ""})


def test_infinite_loop_is_killed_at_the_wall_clock_limit(sandbox):
    r = sandbox.run_python("while True:\n    pass", timeout_s=1.0)
    assert r.limit == "time" and r.returncode is not None and r.returncode < 0
    assert 1.0 <= r.wall_s < 3.0
    assert _sandbox_processes() == []


def test_cpu_limit_ends_a_busy_program():
    sb = SubprocessSandbox(SubprocessSandboxConfig(timeout_s=30, cpu_s=1))
    try:
        r = sb.run_python("while True:\n    pass")
    finally:
        sb.close()
    assert r.limit == "time" and r.wall_s < 10  # SIGXCPU after ~1 s of CPU, not the 30 s wall


def test_memory_bomb_hits_the_memory_limit(sandbox):
    r = sandbox.run_python("blocks = []\nwhile True:\n    blocks.append(bytearray(10**7))")
    assert r.limit == "memory" and not r.ok and r.wall_s < 4
    assert "MemoryError" in r.stderr
    assert _sandbox_processes() == []


def test_fork_bomb_is_bounded_and_leaves_no_process(sandbox):
    bomb = "import os\nwhile True:\n    os.fork()"
    r = sandbox.run_python(bomb)
    assert r.limit == "processes" and not r.ok and r.wall_s < 4
    # children that escape to their own session and sleep: gone when the run ends
    escape = ("import os, time\nfor _ in range(3):\n    if os.fork() == 0:\n"
              "        os.setsid()\n        time.sleep(600)\nprint('parent done')")
    r2 = sandbox.run_python(escape)
    assert r2.ok and r2.stdout == "parent done\n"
    time.sleep(0.2)
    assert _sandbox_processes() == []


def test_no_network_even_to_a_local_listener(sandbox):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    accepted: list[object] = []
    server.settimeout(3)

    def accept() -> None:
        try:
            accepted.append(server.accept())
        except OSError:
            pass

    t = threading.Thread(target=accept)
    t.start()
    try:
        r = sandbox.run_python(f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), "
                               f"timeout=2)\nprint('connected')")
        assert not r.ok and "connected" not in r.stdout
        assert "PermissionError" in r.stderr or "OSError" in r.stderr
        if sandbox.isolation == "namespaces":
            # below the audit hook (ctypes calls connect(2) directly): the kernel refuses,
            # since the run's network namespace has no interface up
            raw = sandbox.run_python(
                "import ctypes, ctypes.util, struct, socket\n"
                "libc = ctypes.CDLL(ctypes.util.find_library('c'), use_errno=True)\n"
                "fd = libc.socket(2, 1, 0)\n"
                f"addr = struct.pack('!HH4s8x', 2, {port}, socket.inet_aton('127.0.0.1'))\n"
                "addr = struct.pack('H', 2) + addr[2:]\n"
                "rc = libc.connect(fd, ctypes.c_char_p(addr), len(addr))\n"
                "print(rc, ctypes.get_errno())")
            rc, errno = map(int, raw.stdout.split())
            assert rc == -1 and errno in (101, 111)  # ENETUNREACH / ECONNREFUSED
    finally:
        t.join()
        server.close()
    assert accepted == []


def test_secrets_in_the_environment_are_not_inherited(sandbox, monkeypatch, tmp_path):
    monkeypatch.setenv("LMFORGE_TEST_SECRET", "hunter2")
    r = sandbox.run_python("import os\nprint(sorted(os.environ))\n"
                           "print(os.environ.get('LMFORGE_TEST_SECRET'))\nprint(os.getcwd())")
    names, secret, cwd = r.stdout.splitlines()
    assert secret == "None" and "LMFORGE_TEST_SECRET" not in names
    assert not Path(cwd).exists()  # the work directory is deleted after the run


def test_output_is_cut_and_a_flood_is_stopped():
    sb = SubprocessSandbox(SubprocessSandboxConfig(max_output_bytes=4096, timeout_s=10))
    try:
        r = sb.run_python("while True:\n    print('x' * 100)")
    finally:
        sb.close()
    assert r.limit == "output" and len(r.stdout) == 4096 and r.wall_s < 5


def test_concurrent_runs_keep_their_own_results(sandbox):
    jobs = [SandboxJob(f"import sys\nprint({i} * int(sys.stdin.read()))", stdin="3")
            for i in range(12)]
    results = run_many(sandbox, jobs)
    assert [r.stdout for r in results] == [f"{3 * i}\n" for i in range(12)]
    assert _sandbox_processes() == []


def test_doctest_runs_without_site(sandbox):
    r = sandbox.run_python("def sq(x):\n    '''\n    >>> sq(3)\n    9\n    '''\n    return x*x\n"
                           "import doctest\nprint(doctest.testmod())")
    assert r.stdout.strip() == "TestResults(failed=0, attempted=1)"
    # -S: third-party packages are out of reach
    r2 = sandbox.run_python("import numpy")
    assert "ModuleNotFoundError" in r2.stderr
