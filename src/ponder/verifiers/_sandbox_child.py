"""The sandbox's first process: fences itself in, then forks the untrusted program.

Run by `ponder.verifiers.sandbox` as ``python -I -S _sandbox_child.py CONFIG`` in a new session,
with ``main.py`` (the program) in its working directory. Standard library only: with ``-I -S``
neither ponder nor site-packages are importable, which is also what the program gets.

Each protection is tried on its own and the ones that held are written, as JSON, to the report
file descriptor before the program starts:

* ``network-namespace``: a new, empty network namespace (no interface is up, not even loopback),
  so no connection or DNS lookup can leave. Without it, ``network-audit-hook``: an audit hook
  that refuses sockets, ctypes and new programs (best effort, Python-level only).
* ``pid-namespace``: the program runs in a new PID namespace; when its init ends, the kernel
  kills everything in it, however it detached, so nothing is left behind.
* ``mount-namespace``: private, size-limited tmpfs over /tmp, /var/tmp, /dev/shm and the scratch
  directory, and over directories only root may enter (such as /root), so whatever the program
  writes vanishes with it and root's files are out of sight.
* ``unprivileged``: the program runs as ``nobody``, so it cannot change root's files and the
  process limit (RLIMIT_NPROC, which does not bind root) stops fork bombs.
* ``rlimits``: CPU seconds, address space, file size, no core dumps, processes.

Three processes: this one stays outside the namespaces; it forks the sandbox's init (PID 1
inside, which reaps orphans), and init forks the program. This one exits the way the program did.
On SIGTERM (the wall-clock timeout) it SIGKILLs init, which takes every process in the namespace
with it, and reaps it, so by the time this process exits the sandbox is empty.
"""

from __future__ import annotations

import builtins
import ctypes
import json
import math
import os
import resource
import signal
import stat
import sys
import traceback
from typing import Any, NoReturn

CLONE_NEWNS = 0x00020000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
PR_SET_PDEATHSIG = 1
NOBODY = 65534
WRITABLE_BY_ALL = ("/tmp", "/var/tmp", "/dev/shm")
BLOCKED_EVENTS = ("socket.", "ctypes.", "subprocess.", "os.system", "os.exec", "os.posix_spawn")


def main() -> None:
    config: dict[str, Any] = json.loads(sys.argv[1])
    source = open("main.py", encoding="utf-8").read()  # noqa: SIM115 - read before any mount
    libc = ctypes.CDLL(None, use_errno=True)
    protections = set_limits(config)
    if config["namespaces"]:
        protections += enter_namespaces(libc, config)
    if "network-namespace" not in protections:
        protections.append("network-audit-hook")
    drop = os.geteuid() == 0 and _stdlib_public()
    if drop:
        protections.append("unprivileged")
    limit_processes(NOBODY if drop else os.getuid(), config["processes"])
    os.write(config["report_fd"], json.dumps(protections).encode())
    os.close(config["report_fd"])

    status_read, status_write = os.pipe()
    children: list[int] = []  # the SIGTERM handler must exist before the fork

    def kill_children(*_: object) -> None:
        for pid in children:
            os.kill(pid, signal.SIGKILL)

    signal.signal(signal.SIGTERM, kill_children)
    init = os.fork()
    if init == 0:
        os.close(status_read)
        run_init(libc, source, config, protections, drop, status_write)
    children.append(init)
    os.close(status_write)
    _, status = os.waitpid(init, 0)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # init is reaped: its pid is not ours any more
    reported = os.read(status_read, 64)
    exit_like(int(reported) if reported else status)


def exit_like(status: int) -> NoReturn:
    """Exit with the program's exit status, or die of the signal that killed it (so the caller
    sees a negative return code, as with any subprocess)."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        if sig not in (signal.SIGKILL, signal.SIGSTOP):
            signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
        os._exit(128 + sig)  # not reached for a deadly signal
    os._exit(os.waitstatus_to_exitcode(status))


def set_limits(config: dict[str, Any]) -> list[str]:
    """Resource limits, inherited by the program and everything it starts (never above a hard
    limit already in place, which only root could raise)."""
    mib = 1024 * 1024
    cpu_s = math.ceil(config["cpu_s"])
    limits = {
        resource.RLIMIT_CPU: (cpu_s, cpu_s + 1),  # SIGXCPU, then SIGKILL
        resource.RLIMIT_AS: (config["memory_mb"] * mib,) * 2,
        resource.RLIMIT_FSIZE: (config["file_mb"] * mib,) * 2,
        resource.RLIMIT_CORE: (0, 0),
    }
    for which, (soft, hard) in limits.items():
        current = resource.getrlimit(which)[1]
        if current != resource.RLIM_INFINITY:
            hard = min(hard, current)
        resource.setrlimit(which, (min(soft, hard), hard))
    return ["rlimits"]


def limit_processes(uid: int, processes: int) -> None:
    """RLIMIT_NPROC counts every process and thread of the user, so the sandbox may start
    `processes` more than the user has now (root ignores the limit: it binds once the program
    runs as `nobody`, or when the caller is not root)."""
    limit = _tasks_of(uid) + processes
    current = resource.getrlimit(resource.RLIMIT_NPROC)[1]
    if current != resource.RLIM_INFINITY:
        limit = min(limit, current)
    resource.setrlimit(resource.RLIMIT_NPROC, (limit, limit))


def _tasks_of(uid: int) -> int:
    """How many tasks (threads included) `uid` runs now, from /proc (0 where there is none)."""
    try:
        pids = [name for name in os.listdir("/proc") if name.isdigit()]
    except OSError:
        return 0
    count = 0
    for pid in pids:
        try:
            if os.stat(f"/proc/{pid}").st_uid == uid:
                count += len(os.listdir(f"/proc/{pid}/task"))
        except OSError:  # the process ended while we counted
            continue
    return count


def enter_namespaces(libc: ctypes.CDLL, config: dict[str, Any]) -> list[str]:
    """New network, PID and mount namespaces where the kernel lets us (root, here)."""
    held = []
    for flag, name in ((CLONE_NEWNET, "network-namespace"), (CLONE_NEWPID, "pid-namespace")):
        if libc.unshare(flag) == 0:
            held.append(name)
    if libc.unshare(CLONE_NEWNS) == 0:
        try:
            private_filesystem(libc, config)
            held.append("mount-namespace")
        except OSError:
            pass  # the namespace exists, but without the tmpfs mounts it protects nothing
    return held


def private_filesystem(libc: ctypes.CDLL, config: dict[str, Any]) -> None:
    """Throw-away tmpfs over everything the program could write to, and over directories only
    root may enter (keeping the Python installation inside them visible)."""
    _mount(libc, None, "/", None, MS_REC | MS_PRIVATE)  # nothing propagates back to the host
    size = f"size={config['scratch_mb']}m"
    flags = MS_NOSUID | MS_NODEV
    for path in WRITABLE_BY_ALL:
        if os.path.isdir(path):
            _mount(libc, "tmpfs", path, "tmpfs", flags, f"{size},mode=1777")
    for hidden, keep in _hidden_ancestors(sys.base_prefix, sys.base_exec_prefix).items():
        handles = [os.open(path, os.O_PATH) for path in keep]
        _mount(libc, "tmpfs", hidden, "tmpfs", flags | MS_NOEXEC, "size=1m,mode=0755")
        for path, handle in zip(keep, handles, strict=True):
            os.makedirs(path, mode=0o755, exist_ok=True)
            _mount(libc, f"/proc/self/fd/{handle}", path, None, MS_BIND | MS_REC)
            os.close(handle)
    scratch = config["scratch"]
    os.makedirs(scratch, exist_ok=True)
    _mount(libc, "tmpfs", scratch, "tmpfs", flags, f"{size},mode=0700,uid={NOBODY},gid={NOBODY}")


def _hidden_ancestors(*paths: str) -> dict[str, list[str]]:
    """For each path, its highest ancestor that others may not enter (such as /root)."""
    found: dict[str, list[str]] = {}
    for path in {os.path.realpath(p) for p in paths}:
        parts = path.split(os.sep)
        for depth in range(2, len(parts)):
            ancestor = os.sep.join(parts[:depth])
            if not os.stat(ancestor).st_mode & stat.S_IXOTH:
                found.setdefault(ancestor, []).append(path)
                break
    return found


def _stdlib_public() -> bool:
    """Whether `nobody` can still import the standard library (every directory on the way to it
    enterable by others), so dropping root does not break the program."""
    for entry in sys.path:
        path = os.path.realpath(entry)
        if not os.path.exists(path):
            continue
        while True:
            if not os.stat(path).st_mode & stat.S_IXOTH:
                return False
            if path == os.sep:
                break
            path = os.path.dirname(path)
    return True


def _mount(
    libc: ctypes.CDLL,
    source: str | None,
    target: str,
    fstype: str | None,
    flags: int,
    data: str | None = None,
) -> None:
    def arg(text: str | None) -> bytes | None:
        return None if text is None else text.encode()

    if libc.mount(arg(source), arg(target), arg(fstype), ctypes.c_ulong(flags), arg(data)) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"mount {target}: {os.strerror(errno)}")


def run_init(
    libc: ctypes.CDLL,
    source: str,
    config: dict[str, Any],
    protections: list[str],
    drop: bool,
    status_write: int,
) -> NoReturn:
    """The sandbox's init (PID 1 of its PID namespace): last set-up as root, then the program as
    its child, reaping every orphan until the program ends. Its wait status goes to the first
    process; when init exits, the kernel kills whatever is left in the namespace.

    The program is not PID 1 itself because the kernel ignores signals like SIGXCPU (the CPU
    limit) and SIGXFSZ for a namespace's init."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        if "mount-namespace" in protections:
            if "pid-namespace" in protections:  # a /proc that shows only the sandbox
                _mount(libc, "proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
            os.chdir(config["scratch"])
            with open("main.py", "w", encoding="utf-8") as file:
                file.write(source)
            os.chown("main.py", NOBODY, NOBODY)
        elif drop:  # the host's scratch directory, removed by the caller afterwards
            os.chown(".", NOBODY, NOBODY)
        if drop:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # after setuid, which clears it
        program = os.fork()
    except BaseException:
        traceback.print_exc()
        os._exit(125)
    if program == 0:
        os.close(status_write)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # not inherited through fork
        if "network-audit-hook" in protections:
            sys.addaudithook(_refuse_network)
        sys.argv = ["main.py"]
        sys.exit(_execute(source, os.path.abspath("main.py")))
    while True:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            os._exit(125)
        if pid == program:
            os.write(status_write, str(status).encode())
            os._exit(0)


def _execute(source: str, path: str) -> int:
    """Run the program as ``__main__``; an uncaught exception prints its traceback (without this
    file's frames) and gives exit status 1, as `python main.py` would."""
    namespace = {"__name__": "__main__", "__file__": path, "__builtins__": builtins}
    try:
        exec(compile(source, path, "exec"), namespace)
    except SystemExit:
        raise
    except BaseException as error:
        frames = error.__traceback__.tb_next if error.__traceback__ else None
        traceback.print_exception(type(error), error, frames)
        return 1
    return 0


def _refuse_network(event: str, _args: tuple[object, ...]) -> None:
    if event.startswith(BLOCKED_EVENTS):
        raise PermissionError(f"sandbox: {event} is not allowed (no network, no new programs)")


if __name__ == "__main__":
    main()
