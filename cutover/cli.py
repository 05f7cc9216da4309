"""`cutover` command line: serve, check-config, demo, parity run, compat report."""

from __future__ import annotations

import argparse
import sys

# Commands whose arguments are all defined here: for them the other commands' modules (the
# parity runner, the bench, …) are not imported just to define arguments nobody parses.
_OWN_ARGUMENTS = frozenset({"serve", "version", "check-config", "demo"})


def _parser(command: str | None = None) -> argparse.ArgumentParser:
    """The command line's parser; `command` (the first word) in `_OWN_ARGUMENTS`: only what
    that command needs."""
    parser = argparse.ArgumentParser(
        prog="cutover", description="A migration gateway in front of two implementations."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the gateway")
    serve.add_argument("-c", "--config", required=True, help="YAML config file")
    serve.add_argument("--workers", type=int, help="worker processes (default: config `workers`)")

    version = sub.add_parser("version", help="the version and which build runs")
    version.add_argument("--modules", action="store_true", help="each hot module: compiled or pure")

    check = sub.add_parser("check-config", help="validate a config file")
    check.add_argument("config", help="YAML config file")

    demo = sub.add_parser("demo", help="two sample backends behind the gateway at 90/10")
    demo.add_argument("--port", type=int, default=8080)
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--traffic", action="store_true", help="send sample traffic as well")
    if command in _OWN_ARGUMENTS:
        return parser

    from cutover.parity.runner import add_arguments as parity_arguments

    parity = sub.add_parser("parity", help="compare two implementations")
    parity_sub = parity.add_subparsers(dest="parity_command", required=True)
    parity_arguments(
        parity_sub.add_parser("run", help="replay a corpus to both sides and report differences")
    )

    from cutover.compat.cli import add_arguments as compat_arguments

    compat = sub.add_parser("compat", help="legacy endpoints: who still calls them")
    compat_sub = compat.add_subparsers(dest="compat_command", required=True)
    compat_arguments(
        compat_sub.add_parser("report", help="callers of legacy endpoints, nearest sunset first")
    )

    from cutover.bench.compare import add_arguments as bench_arguments

    bench = sub.add_parser("bench", help="load-test two implementations side by side")
    bench_sub = bench.add_subparsers(dest="bench_command", required=True)
    bench_arguments(
        bench_sub.add_parser("compare", help="the same Locust scenario against A and B, a verdict")
    )
    # Listed for --help; its arguments are bench.overhead's own (see main).
    bench_sub.add_parser(
        "overhead", help="what the gateway costs: direct vs cutover vs nginx, with wrk"
    )

    from cutover.ctl import add_parser as ctl_parser
    from cutover.nginx.render import add_parser as render_parser

    ctl_parser(sub)
    render_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else argv
    if words[:1] == ["ctl"]:  # polled by operators: only what it needs is imported
        from cutover.ctl import main as ctl_main

        return ctl_main(words[1:])
    if words[:2] == ["bench", "overhead"]:
        from cutover.bench.overhead import main as overhead_main

        return overhead_main(words[2:])
    args = _parser(words[0] if words else None).parse_args(argv)
    if args.command == "serve":
        from cutover.run import serve

        if args.workers is not None and args.workers < 1:
            print("cutover: --workers must be at least 1", file=sys.stderr)
            return 2
        return serve(args.config, args.workers)
    if args.command == "version":
        return _version(args.modules)
    if args.command == "check-config":
        from cutover.core.configkit import ConfigErrors, format_errors
        from cutover.proxy.config import load_config

        try:
            config = load_config(args.config)
        except ConfigErrors as errs:
            print(format_errors(errs), file=sys.stderr)
            return 2
        print(config.summary())
        from cutover.proxy.admin import open_endpoints_warning

        warning = open_endpoints_warning(config)
        if warning is not None:
            print(f"{args.config}: warning: {warning}", file=sys.stderr)
        return 0
    if args.command == "demo":
        from cutover.demo import main as demo_main

        rest = ["--port", str(args.port), "--host", args.host]
        if args.traffic:
            rest.append("--traffic")
        return demo_main(rest) or 0
    if args.command == "parity":
        from cutover.parity.runner import run_command

        return run_command(args)
    if args.command == "compat":
        from cutover.compat.cli import run_command as compat_command

        return compat_command(args)
    if args.command == "bench":
        from cutover.bench.compare import run_command as bench_command

        return bench_command(args, argv=sys.argv[1:] if argv is None else argv)
    if args.command == "ctl":
        from cutover.ctl import run as ctl_run

        return ctl_run(args)
    if args.command == "render":
        from cutover.nginx.render import main as render_main

        return render_main(args)
    return 2  # pragma: no cover


def _version(modules: bool) -> int:
    """`cutover 0.1.0 (compiled)`: the build is "compiled", "pure" or "partial"
    (`cutover.core.build`); with `--modules`, one line per hot module."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    from cutover.core.build import build_detail, describe

    try:
        number = dist_version("cutover")
    except PackageNotFoundError:  # pragma: no cover - run from a tree that is not installed
        number = "unknown"
    info = describe()
    forced = f", forced by {info['forced_by']}" if "forced_by" in info else ""
    print(f"cutover {number} ({info['build']}{forced})")
    if modules:
        for name, kind in build_detail().items():
            print(f"  {name}: {kind}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
