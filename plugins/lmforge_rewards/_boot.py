"""Runs inside the sandbox (stdlib only; started as ``python -I -S _boot.py CPU_S MEMORY_BYTES
FILE_BYTES OPEN_FILES PROCESSES``; it imports as little as it can: startup is most of a run).

It applies the resource limits to itself (children inherit them), and installs an audit hook
that blocks network calls (defence in depth: the kernel's empty network namespace is the real
barrier where namespaces are available) and bounds the processes the run's whole tree may
start (one token per process in a shared pipe: the bound that holds even where RLIMIT_NPROC
does not, for root; code that calls ``fork`` through ctypes bypasses it), puts the working directory on ``sys.path`` as ``python main.py``
would, and runs ``main.py`` as ``__main__``. Exit status 86 means the memory limit was hit
(an uncaught ``MemoryError``), 87 the CPU-time limit.
"""

import os
import resource
import signal
import sys

MEMORY_EXIT = 86
CPU_EXIT = 87
_NETWORK_EVENTS = frozenset({
    "socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg", "socket.getaddrinfo",
    "socket.gethostbyname", "socket.gethostbyaddr", "socket.getnameinfo",
})


def _limit(name: str, value: int, grace: int = 0) -> None:
    """Soft limit ``value``, hard limit ``value + grace`` (never above the current hard one)."""
    kind = getattr(resource, name)
    soft, hard = resource.getrlimit(kind)
    top = value + grace
    if hard != resource.RLIM_INFINITY:
        value, top = min(value, hard), min(top, hard)
    resource.setrlimit(kind, (value, top))


def _out_of_cpu(signum: int, frame: object) -> None:
    os.write(2, b"\nCPU time limit exceeded (the sandbox's RLIMIT_CPU)\n")
    os._exit(CPU_EXIT)


_SPAWN_EVENTS = frozenset({
    "os.fork", "os.forkpty", "os.posix_spawn", "os.posix_spawnp", "subprocess.Popen",
    "os.system", "pty.spawn",
})
_tokens = -1  # read end of the pipe that holds one byte per process the run may still start


def _guard(event: str, args: tuple) -> None:
    if event in _NETWORK_EVENTS:
        raise PermissionError(f"network access is disabled in the lmforge sandbox ({event})")
    if event in _SPAWN_EVENTS:
        try:
            taken = os.read(_tokens, 1)
        except BlockingIOError:
            taken = b""
        if not taken:
            raise BlockingIOError(11, "Resource temporarily unavailable: the lmforge sandbox's "
                                      "process limit was reached")


def _process_tokens(count: int) -> int:
    """A non-blocking pipe holding ``count`` bytes, shared by every process of the run: each
    new process takes one (the whole tree starts at most ``count`` processes)."""
    read, write = os.pipe()
    os.set_blocking(read, False)
    os.write(write, b"x" * max(0, count))
    os.close(write)
    return read


def main() -> None:
    cpu_s, memory, file_bytes, open_files, processes = (int(a) for a in sys.argv[1:6])
    # SIGXCPU at the soft limit ends the program with CPU_EXIT; code stuck in C ignores it
    # until the hard limit a second later, when the kernel sends SIGKILL
    signal.signal(signal.SIGXCPU, _out_of_cpu)
    _limit("RLIMIT_CPU", cpu_s, grace=1)
    _limit("RLIMIT_AS", memory)
    _limit("RLIMIT_FSIZE", file_bytes)
    _limit("RLIMIT_NOFILE", open_files)
    _limit("RLIMIT_NPROC", processes)
    _limit("RLIMIT_CORE", 0)
    global _tokens
    _tokens = _process_tokens(processes - 1)
    sys.addaudithook(_guard)
    sys.argv = ["main.py"]
    sys.path.insert(0, os.getcwd())
    # main.py as __main__ in a fresh module, as ``python main.py`` runs it (doctest.testmod()
    # finds it in sys.modules)
    module = type(sys)("__main__")
    module.__file__ = "main.py"
    module.__builtins__ = __builtins__
    sys.modules["__main__"] = module
    with open("main.py", encoding="utf-8") as f:
        code = compile(f.read(), "main.py", "exec")
    try:
        exec(code, module.__dict__)
    except MemoryError:
        sys.stderr.write("Traceback: the program ran out of memory (the sandbox's address-space "
                         "limit)\nMemoryError\n")
        sys.stderr.flush()
        os._exit(MEMORY_EXIT)


if __name__ == "__main__":
    main()
