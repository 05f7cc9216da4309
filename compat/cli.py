"""`cutover compat report -c FILE`: callers of legacy endpoints to contact before the sunset.

Reads the usage counts the gateways stored (`storage:` of the config) and prints one line per
(rule, caller), the nearest sunset first, then the busiest caller. `--json` prints the same
report as the admin API's `GET /admin/compat/usage`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time

import orjson

from cutover.compat.report import usage_report, usage_text
from cutover.compat.store import ensure_schema, read_usage
from cutover.core.configkit import ConfigErrors, format_errors
from cutover.core.db import StoreUnavailable, open_database
from cutover.proxy.config import CutoverConfig, load_config

__all__ = ["add_arguments", "run_command"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", required=True, help="YAML config file")
    parser.add_argument("--rule", help="only this rule")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


async def _rows(config: CutoverConfig, rule: str | None) -> list[dict[str, object]]:
    # the same place the gateway opens it (Gateway.database)
    base = os.path.dirname(config.source) if config.storage else "."
    db = await open_database(config.storage, base_dir=base or ".")
    try:
        await ensure_schema(db)
        return await read_usage(db, rule)
    finally:
        await db.close()


def run_command(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigErrors as errs:
        print(format_errors(errs), file=sys.stderr)
        return 2
    rules = config.compat.rules if config.compat is not None else ()
    try:
        rows = asyncio.run(_rows(config, args.rule))
    except StoreUnavailable as exc:
        print(f"cutover compat report: the store is unavailable ({exc})", file=sys.stderr)
        return 1
    report = usage_report(rows, rules, time.time(), only=args.rule)
    if args.json:
        sys.stdout.buffer.write(orjson.dumps(report, option=orjson.OPT_INDENT_2) + b"\n")
    else:
        print(usage_text(report))
    return 0
