"""Listening sockets (`proxy.listen`): one owner per address, SO_REUSEPORT among its own sockets."""

from __future__ import annotations

import socket

import pytest

from cutover.proxy.listen import ListenError, Listeners, bind


def reuse_port(sock: socket.socket) -> bool:
    return bool(sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT))


def test_one_socket_holds_its_address_alone() -> None:
    (sock,) = bind(("127.0.0.1", 0), 1, "listen")
    with sock:
        port = sock.getsockname()[1]
        assert not reuse_port(sock)
        with pytest.raises(
            ListenError, match=r"127\.0\.0\.1:\d+ \(listen\): address already in use"
        ):
            bind(("127.0.0.1", port), 1, "listen")
        with pytest.raises(ListenError, match="address already in use"):
            bind(("127.0.0.1", port), 2, "listen")


def test_a_group_shares_one_port_and_lets_no_other_group_in() -> None:
    sockets = bind(("127.0.0.1", 0), 3, "listen")
    try:
        ports = {s.getsockname()[1] for s in sockets}
        assert len(ports) == 1
        assert all(reuse_port(s) for s in sockets)
        (port,) = ports
        for count in (1, 2):  # another gateway, single or supervised
            with pytest.raises(ListenError, match="address already in use"):
                bind(("127.0.0.1", port), count, "admin.listen")
        # every socket of the group takes connections
        with socket.create_connection(("127.0.0.1", port)):
            pass
    finally:
        for s in sockets:
            s.close()


def test_an_address_held_by_a_foreign_reuseport_socket_is_refused() -> None:
    # another program in a SO_REUSEPORT group of its own: the first bind, without the option,
    # finds the address in use
    with socket.socket() as other:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        for count in (1, 2):
            with pytest.raises(ListenError, match="address already in use"):
                bind(("127.0.0.1", port), count, "listen")


def test_a_failed_group_leaves_nothing_open() -> None:
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        with pytest.raises(ListenError):  # ResourceWarning is an error in this suite
            bind(("127.0.0.1", port), 4, "listen")


def test_names_and_fds_for_a_worker() -> None:
    main, admin = bind(("127.0.0.1", 0), 1, "listen")[0], bind(("::1", 0), 1, "x")[0]
    pair = Listeners(main, admin)
    try:
        assert pair.env() == f"main={main.fileno()},admin={admin.fileno()}"
        assert pair.fds() == (main.fileno(), admin.fileno())
        assert admin.family == socket.AF_INET6
        alone = Listeners(main)
        assert (alone.env(), alone.fds()) == (f"main={main.fileno()}", (main.fileno(),))
    finally:
        pair.close()


def test_an_unknown_host_is_one_line() -> None:
    with pytest.raises(ListenError, match=r"cannot listen on no-such-host\.invalid:80 \(listen\)"):
        bind(("no-such-host.invalid", 80), 1, "listen")
