"""The listening sockets of ``nnspam serve``: ours (TCP, Unix) or systemd's
(socket activation: ``LISTEN_FDS`` / ``LISTEN_PID``).

Start-up refusals are one line and exit status 2, with nothing taken over or
created: a bad ``--listen``/``serve.listen`` (:func:`parse_listen`), a TCP
address in use, and a Unix socket where a server answers, whose directory is
missing, or whose path is another kind of file (:func:`unix_listener`); a
stale socket file is replaced, and at exit only our own is removed.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import stat
from dataclasses import dataclass

from nnspam.services.errors import ServerError
from nnspam.services.models.serve_settings import ServeSettings

__all__ = ["Listener", "inherited_sockets", "bind_listeners", "unix_listener", "close_listeners"]

BACKLOG = 128  # clients beyond every worker's max_connections wait here
SD_LISTEN_FDS_START = 3


@dataclass
class Listener:
    """A listening socket and how to name it in the log."""

    sock: socket.socket
    where: str
    unlink: str | None = None  # a Unix socket path we created and remove at exit
    ident: tuple[int, int] | None = None  # its (st_dev, st_ino) when we bound it


def inherited_sockets() -> list[socket.socket] | None:
    """Sockets passed by systemd socket activation (``LISTEN_PID`` is this
    process, ``LISTEN_FDS`` sockets from fd 3 on), or None. The variables
    are removed so that child processes do not take them for theirs."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        return None
    try:
        n = int(os.environ.get("LISTEN_FDS", "0"))
    except ValueError:
        return None
    for var in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(var, None)
    socks = []
    for fd in range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + n):
        s = socket.socket(fileno=fd)
        os.set_inheritable(fd, False)
        socks.append(s)
    return socks or None


def bind_listeners(st: ServeSettings) -> list[Listener]:
    """The listening sockets: systemd's when socket-activated, else ours."""
    got = inherited_sockets()
    if got is not None:
        out = []
        for s in got:
            name = s.getsockname()
            out.append(Listener(s, f"systemd:unix:{name}" if s.family == socket.AF_UNIX
                                else f"systemd:tcp:{name[0]}:{name[1]}"))
        return out
    listeners: list[Listener] = []
    try:
        if st.socket:
            listeners.append(unix_listener(st.socket))
        if st.listen:
            fam = socket.AF_INET6 if ":" in st.listen[0] else socket.AF_INET
            s = socket.socket(fam, socket.SOCK_STREAM)
            listeners.append(Listener(s, ""))
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(st.listen)
                s.listen(BACKLOG)
            except OSError as exc:  # EADDRINUSE: a live server has the port
                raise ServerError(f"cannot listen on tcp:{st.listen[0]}:{st.listen[1]}: "
                                  f"{exc.strerror or exc}") from None
            host, port = s.getsockname()[:2]
            listeners[-1].where = f"tcp:{host}:{port}"
    except BaseException:
        close_listeners(listeners)
        raise
    return listeners


def unix_listener(path: str) -> Listener:
    """Bind and listen on the Unix socket ``path``; never take it from a live server.

    The kernel refuses a second TCP listener on a port, but a Unix socket's
    file can be unlinked and bound again while its server runs on, reachable
    by nobody: spamc then delivers mail unfiltered, without an error. So an
    existing socket file is probed first: if a connection is accepted (or
    the backlog is full) a server is alive there and we refuse; only a
    socket that refuses connections (the file of a server that died) is
    removed and replaced. Any other file is refused and left alone. The
    socket's directory must exist: a mistyped path is refused rather than
    created. Probe and bind happen under an ``flock`` of the directory, so
    that two servers starting at once cannot both replace one stale socket.
    The (st_dev, st_ino) of the new socket is recorded: at exit we remove
    the file only if it is still ours (:func:`close_listeners`). Refusals are
    :class:`ServerError` naming the socket (``nnspam serve`` exits 2, as for
    a TCP address in use)."""
    where = f"unix:{path}"
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        what = "is not a directory" if os.path.exists(directory) else "does not exist"
        raise ServerError(f"cannot listen on {where}: the directory {directory} {what}")
    with contextlib.ExitStack() as stack:
        try:
            dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            pass  # no read permission on the directory: go on without the lock
        else:
            stack.callback(os.close, dfd)
            fcntl.flock(dfd, fcntl.LOCK_EX)
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            pass
        else:
            if not stat.S_ISSOCK(mode):
                raise ServerError(f"cannot listen on {where}: the file exists and is not a "
                                  "socket")
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                probe.settimeout(2.0)
                try:
                    probe.connect(path)
                except (ConnectionRefusedError, FileNotFoundError):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(path)  # stale: nobody listens there
                except (BlockingIOError, TimeoutError):  # backlog full: alive
                    raise ServerError(f"cannot listen on {where}: another server is answering "
                                      "there (stop it first)") from None
                except OSError as exc:
                    raise ServerError(f"cannot listen on {where}: cannot tell whether another "
                                      f"server answers there ({exc.strerror})") from None
                else:
                    raise ServerError(f"cannot listen on {where}: another server is answering "
                                      "there (stop it first)")
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        lst = Listener(s, where)
        try:
            s.bind(path)
            st = os.lstat(path)
            lst.unlink, lst.ident = path, (st.st_dev, st.st_ino)
            s.listen(BACKLOG)
        except OSError as exc:
            close_listeners([lst])
            raise ServerError(f"cannot listen on {where}: {exc.strerror or exc}") from None
    return lst


def close_listeners(listeners: list[Listener]) -> None:
    """Close the listening sockets and remove our Unix socket files, each only
    if it is still the file we bound (same st_dev and st_ino): a socket file
    replaced meanwhile belongs to another server, which must stay reachable."""
    for lst in listeners:
        lst.sock.close()
        if lst.unlink:
            try:
                st = os.lstat(lst.unlink)
                if (st.st_dev, st.st_ino) == lst.ident:
                    os.unlink(lst.unlink)
            except OSError:
                pass
