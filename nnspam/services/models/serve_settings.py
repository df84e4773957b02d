"""The settings of ``nnspam serve`` (``serve:`` in the config, overlaid by the
command line), every one checked here before anything is loaded or bound: a bad
value is one line naming it (:class:`ServerError`, ``nnspam serve`` exits 2),
never a traceback from ``int()`` or ``bind()``."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from nnspam.services.errors import ServerError, parse_listen
from nnspam.services.scoring import FilterSettings
from nnspam.services.scoring import settings as filter_settings

__all__ = ["ServeSettings", "serve_settings"]


@dataclass
class ServeSettings:
    """The server's settings (``serve:`` in the config, overlaid by options)."""

    filter: FilterSettings
    socket: str | None
    listen: tuple[str, int] | None
    allowed: list[ipaddress.IPv4Network | ipaddress.IPv6Network]
    max_size: int
    timeout: float  # seconds for a whole request: reading it and answering it
    score_scale: float
    workers: int | None  # None/0: one per core
    max_connections: int  # requests served at once per worker
    user_model: str | None  # per-user model path pattern (%u, %l, %d, ~)
    user_cache: int  # per-user models kept loaded per worker (LRU)
    spamassassin_headers: bool  # add X-Spam-Flag/X-Spam-Status (spamass-milter)
    rule: Any  # config learn: (nnspam.model.correct.rule_from_config), for TELL
    store: str | None  # config store: the fleet's Redis (nnspam.services.models.fleet)
    allow_tell: bool  # TELL (spamc -L) accepted at all (spamd's --allow-tell)
    # TCP clients whose TELL is accepted (Unix socket clients: the socket's file mode)
    tell_allowed: list[ipaddress.IPv4Network | ipaddress.IPv6Network]
    max_request: int  # bytes: a longer message is refused before it is read
    max_per_client: int  # connections open at once from one client, per worker
    score_mode: str  # SpamAssassin points: verdict.sa_points
    user_lists: str | None  # per-user allow/deny list file pattern (%u, %l, %d, ~)


def _number(s: dict[str, Any], key: str, kind: type, minimum: float,
            above: bool = False) -> Any:
    """``serve.KEY`` from the config as ``kind`` (int or float), at least
    ``minimum`` (more than it with ``above``): a bad value is one line naming
    the setting, not a traceback from ``int()``/``float()`` or a server that
    misbehaves later (a timeout of 0 would make every client socket
    non-blocking)."""
    v = s[key]
    try:
        n = kind(v) if not isinstance(v, bool) else None
    except (TypeError, ValueError, OverflowError):
        n = None
    if n is None or not (n > minimum if above else n >= minimum):
        raise ServerError(f"serve.{key} must be a number {'>' if above else '>='} {minimum}, "
                          f"not {v!r}")
    return n


def _networks(value: Any, what: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    if not isinstance(value, (list, tuple)):
        raise ServerError(f"{what} must be a list of networks, not {value!r}")
    try:
        return [ipaddress.ip_network(a, strict=False) for a in value]
    except (TypeError, ValueError) as exc:
        raise ServerError(f"{what}: {exc}") from None


def serve_settings(cfg: dict[str, Any], model: str | None = None, sock: str | None = None,
                   listen: str | None = None, allow: Sequence[str] | None = None,
                   workers: int | None = None, allow_tell: bool | None = None
                   ) -> ServeSettings:
    """Settings from the config; ``--socket``/``--listen`` given on the command
    line replace both configured listeners, ``--allow`` the allow list,
    ``--workers`` serve.workers, ``--allow-tell`` serve.allow_tell. Under systemd
    socket activation the listeners come from systemd and the configured ones are
    not used."""
    s = cfg["serve"]
    if sock is not None or listen is not None:
        sock_path, listen_s = sock, listen
    else:
        sock_path, listen_s = s["socket"], s["listen"]
    activated = os.environ.get("LISTEN_PID") == str(os.getpid())
    if activated:
        sock_path = listen_s = None
    elif sock_path is None and listen_s is None:
        raise ServerError("nothing to listen on: give --socket PATH and/or --listen HOST:PORT")
    allowed = _networks(allow if allow is not None else s["allowed"],
                        "serve.allowed" if allow is None else "--allow")
    tell_allowed = _networks(s["tell_allowed"], "serve.tell_allowed")
    tell = bool(s["allow_tell"]) if allow_tell is None else allow_tell
    if sock_path is not None and not isinstance(sock_path, str):
        raise ServerError(f"serve.socket must be a path, not {sock_path!r}")
    addr = (parse_listen(listen_s, "serve.listen" if listen is None else "--listen")
            if listen_s is not None else None)
    if addr is not None:
        ip = ipaddress.ip_address(addr[0])
        if not ip.is_loopback and not any(not n.network_address.is_loopback for n in allowed):
            raise ServerError(f"listening on {ip} (not loopback) needs an explicit allow list of "
                              "client networks (serve.allowed or --allow)")
    try:
        f = filter_settings(cfg, model)
        from nnspam.model.correct import rule_from_config

        rule = rule_from_config(cfg)
    except ValueError as exc:
        raise ServerError(str(exc)) from None
    n = s["workers"] if workers is None else workers
    if n is not None and (not isinstance(n, int) or n < 0):
        raise ServerError(f"serve.workers must be a number >= 0 or null, not {n!r}")
    maxc = s["max_connections"]
    if not isinstance(maxc, int) or maxc < 1:
        raise ServerError(f"serve.max_connections must be a number >= 1, not {maxc!r}")
    user_model = s["user_model"]
    if user_model is not None and (not isinstance(user_model, str) or "%" not in user_model):
        raise ServerError("serve.user_model must be null or a path pattern with %u, %l or %d")
    user_lists = s["user_lists"]
    if user_lists is not None and (not isinstance(user_lists, str) or "%" not in user_lists):
        raise ServerError("serve.user_lists must be null or a path pattern with %u, %l or %d")
    store = cfg.get("store")
    if store is not None:
        from nnspam.services.models.store import check_url

        if (problem := check_url(store)) is not None:
            raise ServerError(f"store {problem}")
    max_size = _number(s, "max_size", int, 0)
    max_request = _number(s, "max_request", int, 0)
    if max_request < max_size:
        raise ServerError(f"serve.max_request ({max_request}) must be at least serve.max_size "
                          f"({max_size})")
    return ServeSettings(f, os.path.expanduser(sock_path) if sock_path else None, addr, allowed,
                         max_size,
                         _number(s, "timeout", float, 0, above=True),
                         _number(s, "score_scale", float, 0, above=True), n, maxc, user_model,
                         _number(s, "user_cache", int, 0),
                         bool(s["spamassassin_headers"]), rule, store,
                         tell, tell_allowed, max_request,
                         _number(s, "max_per_client", int, 1), f.score_mode, user_lists)
