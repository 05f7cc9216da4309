"""Listening sockets, bound once by the process that owns the address (DESIGN.md: SO_REUSEPORT is
shared only among the workers of one supervisor).

Any process of the same user may join a SO_REUSEPORT group, so the option alone cannot keep a
second `cutover serve` off a port: the kernel would split connections between the two. Here the
first socket of an address is bound *without* SO_REUSEPORT — which fails with "address already
in use" whatever holds the address, and whatever options it set — and only then is the option
turned on, for the other workers' sockets to bind beside it. A supervisor makes one socket per
worker this way and hands each worker its own as an inherited file descriptor
(`CUTOVER_LISTEN_FDS`), again after a restart: workers never bind, and a restarted worker serves
on the socket its predecessor had (connections queued on it meanwhile wait for it).
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
from dataclasses import dataclass

from cutover.proxy.config import CutoverConfig

ENV = "CUTOVER_LISTEN_FDS"  # "main=<fd>[,admin=<fd>]": a worker's inherited sockets
BACKLOG = 1024


class ListenError(OSError):
    """An address cannot be listened on; the message is one line for the operator."""


@dataclass(frozen=True, slots=True)
class Listeners:
    """One worker's listening sockets: the main listener's, and the admin API's (None: off)."""

    main: socket.socket
    admin: socket.socket | None = None

    def fds(self) -> tuple[int, ...]:
        return tuple(s.fileno() for s in (self.main, self.admin) if s is not None)

    def env(self) -> str:
        """The value of `ENV` that names these sockets to a worker started with them."""
        text = f"main={self.main.fileno()}"
        return text if self.admin is None else f"{text},admin={self.admin.fileno()}"

    def close(self) -> None:
        for sock in (self.main, self.admin):
            if sock is not None:
                sock.close()


def bind(address: tuple[str, int], count: int, key: str) -> list[socket.socket]:
    """`count` listening sockets on `address` (`key`: its config key, for the message).

    The first is bound without SO_REUSEPORT, so that the address must be free; with more than
    one, the option is set on it after the bind and the others bind beside it with it.
    """
    host, port = address
    try:
        infos = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except OSError as exc:
        raise ListenError(f"cannot listen on {_shown(host, port)} ({key}): {exc}") from None
    # a name may resolve to several addresses: listen on one, IPv4 first
    family, _, _, _, sockaddr = sorted(infos, key=lambda i: i[0] != socket.AF_INET)[0]
    sockets: list[socket.socket] = []
    try:
        for index in range(count):
            sock = socket.socket(family, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past TIME_WAIT only
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if index > 0:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(sockaddr)
            if index == 0 and count > 1:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                sockaddr = sock.getsockname()  # port 0: the others join the port it got
            sock.listen(BACKLOG)
            sock.setblocking(False)
    except OSError as exc:
        for sock in sockets:
            sock.close()
        reason = os.strerror(exc.errno).lower() if exc.errno else str(exc)
        if exc.errno == errno.EADDRINUSE:
            reason = "address already in use"
        raise ListenError(f"cannot listen on {_shown(host, port)} ({key}): {reason}") from None
    return sockets


def open_listeners(config: CutoverConfig, count: int) -> list[Listeners]:
    """Every worker's listening sockets for `config`: `count` of them per address."""
    mains = bind(config.listen, count, "listen")
    admins: list[socket.socket | None] = [None] * count
    if config.admin.listen is not None:
        try:
            admins = list(bind(config.admin.listen, count, "admin.listen"))
        except ListenError:
            for sock in mains:
                sock.close()
            raise
    return [Listeners(main, admin) for main, admin in zip(mains, admins, strict=True)]


def inherited() -> Listeners | None:
    """The sockets this worker's supervisor handed it (`ENV`), or None: bind its own."""
    value = os.environ.pop(ENV, None)
    if not value:
        return None
    fds = dict(part.split("=", 1) for part in value.split(","))
    main = socket.socket(fileno=int(fds["main"]))
    admin = socket.socket(fileno=int(fds["admin"])) if "admin" in fds else None
    for sock in (main, admin):
        if sock is not None:
            sock.setblocking(False)
            with contextlib.suppress(OSError):
                sock.set_inheritable(False)  # the worker's own children get none
    return Listeners(main, admin)


def _shown(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
