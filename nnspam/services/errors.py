"""The errors every seam of the services shares, carried down so that no import runs
back up: the sysexits codes the spamd protocol answers with (``EX_*``), a bad request
(:class:`RequestError`, answered ``SPAMD/1.5 code message``), a setting that prevents
the server from starting (:class:`ServerError`) and the one check of a TCP address
(:func:`parse_listen`, for ``serve.listen`` and ``metrics``). Standard library only."""

from __future__ import annotations

import ipaddress
from typing import Any

__all__ = ["RequestError", "ServerError", "parse_listen", "EX_OK", "EX_USAGE", "EX_DATAERR",
           "EX_NOUSER", "EX_UNAVAILABLE", "EX_SOFTWARE", "EX_CANTCREAT", "EX_IOERR",
           "EX_TEMPFAIL", "EX_PROTOCOL", "EX_NOPERM"]

EX_OK = 0
EX_USAGE = 64
EX_DATAERR = 65
EX_NOUSER = 67
EX_UNAVAILABLE = 69
EX_SOFTWARE = 70
EX_CANTCREAT = 73
EX_IOERR = 74
EX_TEMPFAIL = 75  # a fleet's TELL while its model store (Redis) is away: try again later
EX_PROTOCOL = 76
EX_NOPERM = 77


class RequestError(Exception):
    """A bad request: answered ``SPAMD/1.5 code message``."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class ServerError(Exception):
    """A setting that prevents the server from starting."""


def parse_listen(value: Any, what: str) -> tuple[str, int]:
    """The TCP address of ``--listen`` or ``serve.listen`` (``what``): ``IP:PORT``
    or ``[IPv6]:PORT``. Every check of the address is made here, before the
    model is loaded, so that a bad one is one line naming it (``nnspam serve``
    exits 2) and never a traceback from ``int()`` or ``bind()`` (port 99999
    raised OverflowError there). The port: ASCII digits, 0..65535 (0: the
    kernel picks a free port, named on the start line). The host: an IP
    address (a name could resolve to another interface than meant) and never
    empty: ``:783`` means every address to some programs and loopback to
    others, so it has to be said which."""
    if not isinstance(value, str):
        raise ServerError(f"{what} must be HOST:PORT, not {value!r}")

    def bad(problem: str) -> ServerError:
        return ServerError(f"{what} {value!r}: {problem}")

    if value.startswith("["):
        host, sep, rest = value[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise bad("not [IPv6]:PORT")
        port = rest[1:]
    else:
        host, sep, port = value.rpartition(":")
        if not sep:
            host, port = port, ""
    if not port:
        raise bad("no port (HOST:PORT)")
    if not (port.isascii() and port.isdigit()):
        raise bad(f"port {port[:20]!r} is not a number")
    if len(port) > 5 or int(port) > 65535:
        raise bad(f"port {port if len(port) <= 12 else port[:12] + '...'} is out of range "
                  "(0..65535)")
    if not host:
        raise bad("no host: give an IP address (127.0.0.1 loopback, 0.0.0.0 or [::] every "
                  "address)")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise bad(f"{host[:60]!r} is not an IP address (IPv6: [ADDRESS]:PORT)") from None
    return host, int(port)
