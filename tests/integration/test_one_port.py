"""One gateway per address (DESIGN.md): a second `cutover serve` on a port in use fails at start,
and the workers of one supervisor share its sockets, across worker restarts too."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from tests.conftest import ROOT, free_port, gateway_config, wait_for

# Every test runs on both listener paths: proxy.fastpath and aiohttp alone.
pytestmark = pytest.mark.usefixtures("serving_path")


def with_admin(config: dict[str, Any], port: int | None = None) -> dict[str, Any]:
    return dict(config, admin={"listen": f"127.0.0.1:{port or free_port()}"})


def serve(config_path: Path, workers: int) -> subprocess.CompletedProcess[str]:
    """`cutover serve` to completion (its own process group, ended whole if it overstays)."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cutover",
            "serve",
            "-c",
            str(config_path),
            "--workers",
            str(workers),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # it started and kept serving: the bug
        out, err = proc.communicate()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


async def answered_by(url: str) -> str:
    async with aiohttp.ClientSession() as s, s.get(url + "/one-port") as r:
        assert r.status == 200
        return str((await r.json())["backend"])


@pytest.mark.parametrize("workers", [1, 2])
async def test_a_second_gateway_on_the_same_port_fails_at_start(
    workers: int, backends, gateway_process, tmp_path: Path
) -> None:
    go = await backends("go")
    first = await gateway_process(with_admin(gateway_config({"go": go.url})), workers).ready()
    admin_url = "http://" + yaml.safe_load(first.config_path.read_text())["admin"]["listen"]
    second = await asyncio.to_thread(serve, first.config_path, workers)
    assert second.returncode == 1, second.stderr
    expected = f"cannot listen on 127.0.0.1:{first.port} (listen): address already in use"
    assert second.stderr.strip() == f"cutover: {expected}"  # one line, no traceback
    assert "Traceback" not in second.stderr
    # the first one serves on, main and admin listener
    for _ in range(10):
        assert await answered_by(first.url) == "go"
    async with aiohttp.ClientSession() as s, s.get(admin_url + "/admin/whoami") as r:
        assert r.status == 200
    assert first.proc.poll() is None
    assert "Traceback" not in first.output()


async def test_the_admin_address_in_use_fails_the_start_too(
    backends, gateway_process, tmp_path: Path
) -> None:
    go = await backends("go")
    first = await gateway_process(with_admin(gateway_config({"go": go.url}))).ready()
    admin = yaml.safe_load(first.config_path.read_text())["admin"]["listen"]
    admin_port = int(admin.rsplit(":", 1)[1])
    other = tmp_path / "other"
    other.mkdir()
    main_port = free_port()
    config = with_admin(gateway_config({"go": go.url}, listen=f"127.0.0.1:{main_port}"), admin_port)
    path = other / "cutover.yaml"
    path.write_text(yaml.safe_dump(config))
    second = await asyncio.to_thread(serve, path, 2)
    assert second.returncode == 1, second.stderr
    expected = f"cannot listen on 127.0.0.1:{admin_port} (admin.listen): address already in use"
    assert second.stderr.strip() == f"cutover: {expected}"  # one line, no traceback
    with socket.socket() as probe:  # nothing of the second one is left holding its main port
        probe.bind(("127.0.0.1", main_port))
    assert await answered_by(first.url) == "go"


# -- which process holds which socket (Linux /proc) ------------------------------------------


def children(pid: int) -> set[int]:
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.add(int(entry))
    return found


def socket_inodes(pid: int) -> set[int]:
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:["):
                inodes.add(int(link[8:-1]))
    except OSError:
        pass
    return inodes


def tcp_inodes(port: int, state: str) -> set[int]:
    """Sockets on local port `port` in `state` ("0A" listening, "01" established)."""
    inodes = set()
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            if int(fields[1].split(":")[1], 16) == port and fields[3] == state:
                inodes.add(int(fields[9]))
    return inodes


async def connections(port: int, count: int) -> list[asyncio.StreamWriter]:
    """`count` kept-alive connections, each answered once (so a worker has accepted it)."""
    writers = []
    for _ in range(count):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writers.append(writer)
        writer.write(b"GET /held HTTP/1.1\r\nHost: a\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
        assert head.startswith(b"HTTP/1.1 200"), head
        length = next(
            int(line.split(b":")[1]) for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        )  # fmt: skip
        await asyncio.wait_for(reader.readexactly(length), 30)
    return writers


def holders(workers: set[int], port: int) -> dict[int, int]:
    """Established connections on `port` per worker."""
    established = tcp_inodes(port, "01")
    return {pid: len(socket_inodes(pid) & established) for pid in workers}


async def close_all(writers: list[asyncio.StreamWriter]) -> None:
    for w in writers:
        w.close()


async def test_workers_share_the_supervisors_sockets_across_a_restart(
    backends, gateway_process
) -> None:
    go = await backends("go")
    gp = await gateway_process(gateway_config({"go": go.url}), workers=2).ready()
    sup = gp.proc.pid
    await wait_for(lambda: len(children(sup)) == 2, deadline=30)
    workers = children(sup)
    listening = tcp_inodes(gp.port, "0A")
    assert len(listening) == 2  # one SO_REUSEPORT socket per worker
    assert socket_inodes(sup) >= listening  # the supervisor holds them all
    await wait_for(  # each worker its own one, once it runs
        lambda: (
            sorted(len(socket_inodes(w) & listening) for w in workers) == [1, 1]
            and set.union(*(socket_inodes(w) & listening for w in workers)) == listening
        ),
        deadline=30,
    )

    held = await connections(gp.port, 32)
    counts = holders(workers, gp.port)
    assert all(n > 0 for n in counts.values()), counts  # the kernel spreads over both
    await close_all(held)

    victim = min(workers)
    (its_socket,) = socket_inodes(victim) & listening
    os.kill(victim, signal.SIGKILL)
    await wait_for(lambda: len(children(sup) - workers) == 1, deadline=30)
    (successor,) = children(sup) - workers
    # the same socket, not a new bind, and only that one
    await wait_for(lambda: socket_inodes(successor) & listening == {its_socket}, deadline=30)
    assert tcp_inodes(gp.port, "0A") == listening

    held = await connections(gp.port, 32)  # all answered, the successor's share too
    counts = holders((workers - {victim}) | {successor}, gp.port)
    assert counts[successor] > 0, counts
    await close_all(held)
    assert "worker 0 exited" in gp.output() or "worker 1 exited" in gp.output()
