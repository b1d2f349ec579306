"""A warm start for the language server: an editor that reloads (VS Code's Reload Window) gets a server in
a fraction of a second instead of the seconds its imports take on a busy machine (lsprotocol alone is a
third of a second idle, three times that under load).

`python -m nightlab.server --warm` (the VS Code extension's command) is a small launcher. It asks this
user's warm process (one per interpreter, a Unix socket only its owner may use, uid checked) for a server:
the warm process, which has imported the server's code and nothing else, forks one that takes over the
launcher's stdin, stdout and stderr (passed over the socket), its environment (the API key passes through
on its way to the server's; the warm process keeps none and starts without one) and its working
directory. The launcher stays as the server's stand-in for the editor: it ends when the server does,
with its exit code, and passes a SIGTERM on. With no warm process (the first start), or one whose code
is not the installed code (an upgrade, an edit of an editable install: every module's mtime is in its
stamp), the launcher starts a new one in the background and runs the server itself, cold, as before.
The warm process ends after IDLE_S without a request, on SIGTERM, and when a newer one takes its socket;
it holds no workspace and no loop.
Must not import at module level: pygls, lsprotocol, the rest of nightlab (the launcher's start is the point).
"""

from __future__ import annotations

import array
import hashlib
import json
import os
import selectors
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

IDLE_S = 900.0  # a warm process with no request for this long ends
SECRETS = ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN")  # never in the warm process's own environment


def stamp() -> str:
    """The installed code as it is now: the interpreter and every module's path and mtime."""
    root = Path(__file__).resolve().parents[2]  # the nightlab package
    h = hashlib.sha256(os.fsencode(sys.executable))
    for folder in ("server", "protocol"):
        for path in sorted((root / folder).rglob("*.py")):
            h.update(os.fsencode(path) + str(path.stat().st_mtime_ns).encode())
    return h.hexdigest()[:24]


def socket_path() -> Path:
    from nightlab.server.control.paths import _private_dir  # light: no pygls, no git

    return _private_dir() / f"warm-{hashlib.sha256(os.fsencode(sys.executable)).hexdigest()[:12]}.sock"


# --------------------------------------------------------------------------- the launcher


def launch() -> None:
    """Serve this editor from the warm process, else cold (starting a warm process for the next time)."""
    code = stamp()
    try:
        sys.exit(_through_warm(code))
    except (OSError, ValueError, ConnectionError):
        pass
    _start_warm(code)
    from nightlab.server.lsp.app import main

    main()


def _through_warm(code: str) -> int:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.settimeout(2.0)
    conn.connect(os.fspath(socket_path()))
    ask = json.dumps({"stamp": code, "cwd": os.getcwd(), "env": dict(os.environ)}).encode() + b"\n"
    conn.sendmsg([ask], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [0, 1, 2]))])
    reader = conn.makefile("rb")
    first = json.loads(reader.readline() or b"{}")
    if "pid" not in first:
        raise ConnectionError(first.get("error", "no answer"))
    pid = int(first["pid"])
    signal.signal(signal.SIGTERM, lambda *_: _kill(pid))
    signal.signal(signal.SIGINT, lambda *_: _kill(pid))
    conn.settimeout(None)
    line = reader.readline()  # the server's end, when the warm process is still there to say it
    if line:
        return int(json.loads(line).get("exit", 0))
    while _alive(pid):  # the warm process went first: follow the server itself
        time.sleep(0.5)
    return 0


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except OSError:
        pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False


def _start_warm(code: str) -> None:
    env = {k: v for k, v in os.environ.items() if k not in SECRETS}
    try:
        subprocess.Popen(
            [sys.executable, "-m", "nightlab.server.lsp.warm", code],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            env=env,
            cwd="/",
        )
    except OSError:
        pass  # no warm start next time; this one goes on cold


# --------------------------------------------------------------------------- the warm process


def serve(code: str) -> None:
    """Import the server's code, then fork a server for each launcher that asks, until idle."""
    import nightlab.server.lsp.app  # noqa: F401  (the point: the imports done once)

    path = socket_path()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    listener.bind(os.fspath(path))
    os.chmod(path, 0o600)
    listener.listen(8)
    mine = path.stat().st_ino
    waker_r, waker_w = os.pipe()
    os.set_blocking(waker_w, False)
    signal.set_wakeup_fd(waker_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ)
    sel.register(waker_r, selectors.EVENT_READ)
    children: dict[int, socket.socket] = {}
    last = time.monotonic()
    try:
        while (time.monotonic() - last < IDLE_S or children) and _still(path, mine):
            for key, _ in sel.select(timeout=30):
                if key.fileobj is listener:
                    last = time.monotonic()
                    conn, _ = listener.accept()
                    if _answer(conn, code, listener, children) == "stale":
                        return  # the code changed under it: the launcher starts a new one
                else:
                    os.read(waker_r, 512)
            _reap(children)
    finally:
        if _still(path, mine):
            path.unlink()


def _still(path: Path, inode: int) -> bool:
    """Whether the socket at `path` is still this process's (a newer warm process may have taken it)."""
    try:
        return path.stat().st_ino == inode
    except OSError:
        return False


def _answer(conn: socket.socket, code: str, listener: socket.socket, children: dict[int, socket.socket]) -> str:
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    if struct.unpack("3i", creds)[1] != os.getuid():
        conn.close()
        return "refused"
    conn.settimeout(5.0)
    fds = array.array("i")
    data, ancdata, _, _ = conn.recvmsg(1 << 20, socket.CMSG_LEN(3 * fds.itemsize))
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
    try:
        ask = json.loads(data.split(b"\n", 1)[0])
    except ValueError:
        ask = {}
    if ask.get("stamp") != code or len(fds) != 3:
        conn.sendall(json.dumps({"error": "stale" if ask.get("stamp") != code else "no stdio"}).encode() + b"\n")
        conn.close()
        for fd in fds:
            os.close(fd)
        return "stale" if ask.get("stamp") != code else "refused"
    pid = os.fork()
    if pid == 0:  # the server: the launcher's stdio, environment and folder
        _become_server(list(fds), ask, [conn, listener])
    for fd in fds:
        os.close(fd)
    conn.sendall(json.dumps({"pid": pid}).encode() + b"\n")
    children[pid] = conn
    return "forked"


def _become_server(fds: list[int], ask: dict, close: list[socket.socket]) -> None:
    code = 1
    try:
        for s in close:
            s.close()
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_DFL)
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        os.setsid()
        os.environ.clear()
        os.environ.update({str(k): str(v) for k, v in (ask.get("env") or {}).items()})
        os.chdir(ask.get("cwd") or "/")
        from nightlab.server.lsp.app import main

        main()
        code = 0
    finally:
        os._exit(code)


def _reap(children: dict[int, socket.socket]) -> None:
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        conn = children.pop(pid, None)
        if conn is not None:
            try:
                conn.sendall(json.dumps({"exit": os.waitstatus_to_exitcode(status)}).encode() + b"\n")
            except OSError:
                pass
            conn.close()


if __name__ == "__main__":
    serve(sys.argv[1])
