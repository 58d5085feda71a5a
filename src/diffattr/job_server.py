"""A local job server: each Snakemake job runs in a fork of one process that has already
imported torch and diffusers, instead of paying for those imports again.

On two CPU cores a torch job of the embedded default spends about 5 s of its 10-25 s before
its first line of work: importing torch (2.4 s), diffusers (1.5 s) and ``torch._dynamo`` (which
``torch.optim`` and ``torch.func`` import on first use, 1-3 s). The workflow runs about 130 such
jobs. With ``DIFFATTR_JOB_SERVER=1`` in its environment, a local (not cluster) ``snakemake``
run starts this server in the Snakefile's ``onstart`` hook; every ``scripts/*.py`` begins with
``delegate_to_job_server`` (:func:`delegate`), which hands the job to the server when one is
listening and returns otherwise, so a job runs the same code either way.

How a delegated job runs:

* the client (the job process Snakemake started) sends its argv, working directory,
  environment and ``sys.path``, and passes its stdin, stdout and stderr over the Unix socket;
* the server forks; the child takes those, starts its own session and runs the job script
  (the script Snakemake wrote, preamble included) as ``__main__``; :func:`delegate` returns at
  once inside the child;
* the client forwards SIGINT, SIGTERM and SIGHUP to the child and exits with the child's exit
  status; a child whose client has gone (killed) ends itself, so no orphan writes outputs.

Only jobs with one thread are delegated: the server imports numpy and torch with every
``*_NUM_THREADS`` at 1, as Snakemake sets them for a one-thread job, so results are
bit-identical to a fresh process (``tests/test_job_server.py`` compares a whole run). Jobs
with more threads, and every job when no server is listening, run in their own process as
before. Snakemake's benchmark files still time each job (column ``s``), but their memory
columns measure the small client, not the job: the child appends its own peak RSS to the job's
log (:func:`peak_memory_mb`), and the report's runtime table reads it from there.
"""

from __future__ import annotations

import array
import atexit
import json
import os
import signal
import socket
import struct
import sys
import threading
import traceback
from pathlib import Path
from typing import Any

SOCKET_ENV = "DIFFATTR_JOB_SERVER_SOCKET"
PREFIX_ENV = "DIFFATTR_JOB_SERVER_PREFIX"  # the server's sys.prefix: a job in another env runs here
ENABLE_ENV = "DIFFATTR_JOB_SERVER"
THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "GOTO_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)
PRELOAD = (
    "numpy",
    "h5py",
    "yaml",
    "torch",
    "torch._dynamo",
    "torch.func",
    "torch.optim",
    "diffattr.models",
    "diffattr.training",
    "diffattr.measure",
    "diffattr.features",
    "diffattr.sampling",
    "diffattr.jobs.common",
)
PEAK_MEMORY_LINE = "diffattr job server: peak RSS"
_STATUS = struct.Struct("!i")
_inside_server = False


# ---------------------------------------------------------------- the client (a job process)


def delegate(snakemake: Any) -> None:
    """Run this job script in the job server and exit with its status, if a server listens
    and the job has one thread; otherwise return and let the script run here."""
    path = os.environ.get(SOCKET_ENV)
    if (
        _inside_server
        or not path
        or os.environ.get(PREFIX_ENV) != sys.prefix  # a conda or container job: not our Python
        or int(getattr(snakemake, "threads", 1)) != 1
    ):
        return
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        client.connect(path)
    except OSError:
        client.close()
        return  # no server (it ended, or never started): run here
    request = {
        "argv": sys.argv,
        "cwd": os.getcwd(),
        "env": dict(os.environ),
        "path": sys.path,
    }
    try:
        _send_message(client, json.dumps(request).encode(), fds=[0, 1, 2])
        reply = _receive_exactly(client, _STATUS.size)
    except OSError:  # e.g. a closed stdin cannot be passed on
        reply = None
    if reply is None:  # the job did not start in the server: nothing ran, run it here
        client.close()
        return
    (child,) = _STATUS.unpack(reply)

    def forward(signum: int, _frame: Any) -> None:
        try:
            os.kill(child, signum)
        except ProcessLookupError:
            pass

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, forward)
    status = _receive_exactly(client, _STATUS.size)
    sys.stdout.flush()
    sys.stderr.flush()
    if status is None:  # the child died without reporting (killed by a signal)
        os._exit(1)
    os._exit(_STATUS.unpack(status)[0])


# ---------------------------------------------------------------- the server


def serve(socket_path: str, parent_pid: int) -> None:
    """Preload the job imports, then fork one child per connection until ``parent_pid`` (the
    Snakemake process) is gone or SIGTERM arrives."""
    for name in THREAD_VARIABLES:
        os.environ[name] = "1"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    Path(socket_path).unlink(missing_ok=True)
    listener.bind(socket_path)
    os.chmod(socket_path, 0o600)
    listener.listen(64)  # jobs that connect during the imports below wait in the backlog
    import importlib

    for module in PRELOAD:
        importlib.import_module(module)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    listener.settimeout(1.0)
    try:
        while os.getppid() == parent_pid:
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            connection.settimeout(None)
            if os.fork() == 0:
                listener.close()
                _run_child(connection)  # never returns
            connection.close()
    finally:
        listener.close()
        Path(socket_path).unlink(missing_ok=True)


def _run_child(connection: socket.socket) -> None:
    global _inside_server
    _inside_server = True
    status = 1
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.setsid()
        payload, fds = _receive_message(connection)
        request = json.loads(payload)
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        os.environ.pop(SOCKET_ENV, None)  # the job's delegate() and subprocesses run here
        sys.argv = list(request["argv"])
        sys.path[:] = request["path"]
        connection.sendall(_STATUS.pack(os.getpid()))
        threading.Thread(target=_end_with_client, args=(connection,), daemon=True).start()
        status = _run_script(sys.argv[0])
    except BaseException:
        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
            connection.sendall(_STATUS.pack(status))
        finally:
            os._exit(status)


def _run_script(script: str) -> int:
    import types

    module = types.ModuleType("__main__")
    module.__file__ = script
    sys.modules["__main__"] = module
    try:
        code = compile(Path(script).read_bytes(), script, "exec")
        exec(code, module.__dict__)
        status = 0
    except SystemExit as exit_:
        status = _exit_status(exit_.code)
    except BaseException:
        traceback.print_exc()
        status = 1
    atexit._run_exitfuncs()
    if status == 0:
        _record_peak_memory(module.__dict__.get("snakemake"))
    return status


def _record_peak_memory(snakemake: Any) -> None:
    """Append the job's peak RSS to its log: Snakemake's benchmark file measured the client."""
    import resource

    logs = list(getattr(snakemake, "log", []) or [])
    if not logs:
        return
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
    with open(logs[0], "a") as stream:
        stream.write(f"{PEAK_MEMORY_LINE} {peak_mb:.2f} MB\n")


def peak_memory_mb(log_path: str | os.PathLike) -> float | None:
    """The peak RSS (MB) a job server child recorded at the end of ``log_path``, if any."""
    try:
        with open(log_path, "rb") as stream:
            stream.seek(0, os.SEEK_END)
            stream.seek(max(0, stream.tell() - 200))
            tail = stream.read().decode(errors="replace").splitlines()
    except OSError:
        return None
    if tail and tail[-1].startswith(PEAK_MEMORY_LINE):
        return float(tail[-1][len(PEAK_MEMORY_LINE) :].split()[0])
    return None


def _exit_status(code: Any) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def _end_with_client(connection: socket.socket) -> None:
    """The client sends nothing after its request: a read returns only when it has gone."""
    try:
        connection.recv(1)
    except OSError:
        pass
    os._exit(1)


# ---------------------------------------------------------------- framing


def _send_message(sock: socket.socket, payload: bytes, fds: list[int]) -> None:
    header = struct.pack("!I", len(payload))
    sock.sendmsg([header], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
    sock.sendall(payload)


def _receive_message(sock: socket.socket) -> tuple[bytes, list[int]]:
    header, ancillary, _, _ = sock.recvmsg(4, socket.CMSG_LEN(16 * array.array("i").itemsize))
    fds = array.array("i")
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
    header += _receive_exactly(sock, 4 - len(header)) or b""
    (size,) = struct.unpack("!I", header)
    payload = _receive_exactly(sock, size)
    if payload is None:
        raise ConnectionError("the client closed the connection inside its request")
    return payload, list(fds)


def _receive_exactly(sock: socket.socket, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            return None
        data += chunk
    return data


# ---------------------------------------------------------------- Snakemake hooks


class JobServer:
    """The server process of one Snakemake run: :meth:`start` in ``onstart``, :meth:`stop` in
    ``onsuccess`` / ``onerror`` (it also ends by itself when Snakemake is gone)."""

    def __init__(self) -> None:
        self.process: Any = None
        self.socket_dir: str | None = None

    def start(self, directory: str | os.PathLike, local: bool) -> bool:
        """Start the server when ``DIFFATTR_JOB_SERVER=1`` and jobs run on this machine;
        returns whether it started. Jobs find it through ``DIFFATTR_JOB_SERVER_SOCKET``."""
        import subprocess
        import tempfile

        if os.environ.get(ENABLE_ENV, "0") != "1" or not local or sys.platform != "linux":
            self.stop()
            return False
        Path(directory).mkdir(parents=True, exist_ok=True)
        # a Unix socket path is limited to about 100 bytes: keep it short, in /tmp
        self.socket_dir = tempfile.mkdtemp(prefix="diffattr-jobs-")
        path = os.path.join(self.socket_dir, "socket")
        log = open(Path(directory) / "job_server.log", "w")  # noqa: SIM115 (the child keeps it)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "diffattr.job_server", path, str(os.getpid())],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)},
        )
        log.close()
        if not _wait_for(path, self.process):
            self.stop()
            return False
        os.environ[SOCKET_ENV] = path
        os.environ[PREFIX_ENV] = sys.prefix
        return True

    def stop(self) -> None:
        os.environ.pop(SOCKET_ENV, None)
        os.environ.pop(PREFIX_ENV, None)
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except Exception:
                self.process.kill()
        self.process = None
        if self.socket_dir is not None:
            import shutil

            shutil.rmtree(self.socket_dir, ignore_errors=True)
            self.socket_dir = None


def _wait_for(path: str, process: Any, timeout: float = 60.0) -> bool:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        if os.path.exists(path):
            return True
        time.sleep(0.05)
    return False


if __name__ == "__main__":
    from diffattr.job_server import serve as serve_here  # one module object for the children

    serve_here(sys.argv[1], int(sys.argv[2]))
