"""What a mirrored route's window read costs the loop it runs on (`WindowBook.read`: the mirror
process's, or with `mirror.process: false` the gateway's).

    python -m cutover.bench.window_read [--results 1000] [--repeats 5] [--storage URL]

(a PostgreSQL `--storage` gets a table `parity_results` in its schema: give it a schema of
its own, `?search_path=...`, and drop it afterwards)

Every `REFRESH_SECONDS` each mirrored route's window reads the results stored since its last
read (other workers', and this worker's own), and every `FULL_REFRESH`th time reloads itself
whole: work on the gateway's loop that the primary's requests wait behind. A real gateway (the
parity feature alone, one mirrored route) on a real store (SQLite in a temporary directory
unless `--storage`), `--results` results per case:

- `own`: a worker alone reads back what it stored and booked itself;
- `reload, held`: the whole reload of a window that holds every result already;
- `other`: another worker's results, new to this window (decoded and added);
- `previous, own`: the read as it was before (every new result decoded again, merged at once),
  for a ratio taken in the same run.

For each, the best of `--repeats`: the loop thread's CPU time (ms) and the longest time the
loop went without running another callback (ms, at the loop clock's 1 ms resolution).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import orjson
import uvloop

from cutover.bench import mirror_copy_cost
from cutover.parity.mirror import sample_of
from cutover.parity.results_store import insert_results
from cutover.parity.shadow import ParityFeature
from cutover.parity.window import ResultWindow
from cutover.proxy.config import parse_config
from cutover.proxy.server import Gateway

__all__ = ["main", "measure"]

ENDPOINT = "GET /alerts/{id}"
FIELDS = orjson.dumps(
    {f"$.alerts[{i}].{k}": "x" for i in range(4) for k in ("labels", "startsAt", "count")}
).decode()


def config(storage: str, window: int) -> dict[str, Any]:
    """`bench.mirror_copy_cost`'s gateway (one route mirrored at 100 %, no backend reached) on
    `storage`, its windows `window` results long, the mirror on its own workers (no child)."""
    data = mirror_copy_cost.config(Path("."))
    data["storage"] = storage
    data["parity"] = {"window": window, "mirror": {"process": False}}
    return data


async def timed(run: Callable[[], Awaitable[None]]) -> tuple[float, float]:
    """The loop thread's CPU (ms) while `run` runs, and the longest stall of the loop (ms)."""
    loop = asyncio.get_running_loop()
    worst = 0.0
    done = False

    async def probe() -> None:  # another callback of the loop, as a request's would be
        nonlocal worst
        while not done:
            start = loop.time()
            await asyncio.sleep(0)
            worst = max(worst, loop.time() - start)

    prober = asyncio.create_task(probe())
    await asyncio.sleep(0)
    before = time.thread_time()
    await run()
    spent = time.thread_time() - before
    done = True
    await prober
    return spent * 1e3, worst * 1e3


async def previous_read(parity: ParityFeature, window: ResultWindow) -> None:
    """The read before `_read_window`: every result above `top` decoded, merged at once."""
    rows = await parity.book.latest_rows(
        "default", window.top, "id, endpoint, fields, noise_fields"
    )
    window.merge([(int(r["id"]), parity.book._sample(r)) for r in rows])


async def measure(storage: str | None, results: int, repeats: int) -> dict[str, tuple[float, ...]]:
    """Per case: the best loop-thread CPU (ms) and the best longest stall (ms)."""
    with tempfile.TemporaryDirectory(prefix="cutover-bench-window-") as tmp:
        url = storage or f"sqlite:///{Path(tmp) / 'state.db'}"
        gw = Gateway(parse_config(config(url, results), "bench.yaml"), None, (ParityFeature,))
        await gw.start()
        try:
            (parity,) = [f for f in gw.features if isinstance(f, ParityFeature)]
            db = await parity._database()
            row = (time.time(), "default", ENDPOINT, "GET", "/alerts/1", "primary",
                   "candidate", 200, 200, FIELDS, None, "[]")  # fmt: skip
            sample = sample_of(ENDPOINT, FIELDS, None)
            figures: dict[str, list[tuple[float, float]]] = {}

            async def stored(own: bool) -> ResultWindow:
                window = parity.book.windows["default"]
                ids = await insert_results(db, [row] * results)
                if own:
                    for i in ids:
                        window.append((i, sample))  # booked, as the mirror books what it stored
                return window

            for _ in range(repeats):
                window = await stored(own=True)
                figures.setdefault("own", []).append(
                    await timed(lambda w=window: parity.book.read("default", w, False))
                )
                figures.setdefault("reload, held", []).append(
                    await timed(lambda w=window: parity.book.read("default", w, True))
                )
                window = await stored(own=False)
                figures.setdefault("other", []).append(
                    await timed(lambda w=window: parity.book.read("default", w, False))
                )
                window = await stored(own=True)
                figures.setdefault("previous, own", []).append(
                    await timed(lambda w=window: previous_read(parity, w))
                )
            return {
                case: (min(c for c, _ in runs), min(s for _, s in runs))
                for case, runs in figures.items()
            }
        finally:
            await gw.close()


def render(figures: dict[str, tuple[float, ...]], results: int) -> list[str]:
    lines = [
        f"| case ({results:,} results) | loop-thread CPU, ms | longest stall, ms |",
        "|---|---|---|",
    ]
    for case, (cpu, stall) in figures.items():
        lines.append(f"| {case} | {cpu:.1f} | {stall:.0f} |")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cutover.bench.window_read")
    parser.add_argument("--results", type=int, default=1000, help="per case (and the window)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--storage", help="a storage URL (default: SQLite in a temporary dir)")
    args = parser.parse_args(argv)
    figures = uvloop.run(measure(args.storage, args.results, args.repeats))
    print("\n".join(render(figures, args.results)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
