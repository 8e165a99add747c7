"""The ``cellnet`` command line: one entry point, one subcommand per job."""

from __future__ import annotations

import argparse
import pathlib
import runpy
import sys


def _cmd_info(args: argparse.Namespace) -> int:
    """Print the version, the native build and the CPU features it dispatches on."""
    import cellnet
    from cellnet import native

    print(f"cellnet {cellnet.__version__}")
    print(f"native ABI {native.lib.cn_abi_version()} (expected {native.EXPECTED_ABI})")
    print(f"crc32c implementation: {native.crc32c_impl()}")
    print(f"cpu features: {' '.join(sorted(native.cpu_features())) or '(none)'}")
    return 0


def _find_bench() -> pathlib.Path | None:
    """bench/run.py of the source checkout: the current directory or the package's parent."""
    from cellnet._checkout import find_in_checkout

    return find_in_checkout("bench/run.py")


def _cmd_bench(argv: list[str]) -> int:
    """Run the benchmark programs of the source checkout (bench/run.py)."""
    script = _find_bench()
    if script is None:
        print(
            "cellnet bench: bench/run.py not found; run it from a cellnet source checkout",
            file=sys.stderr,
        )
        return 2
    sys.argv = ["cellnet bench", *argv]
    try:
        runpy.run_path(str(script), run_name="__main__")
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def _cmd_provision(argv: list[str]) -> int:
    """Make a project CA and startup kits (cellnet.security.provision_main)."""
    from cellnet.security import provision_main

    return provision_main(argv)


def _cmd_run(argv: list[str]) -> int:
    """Start a server, site or child cell from its startup kit (cellnet.run.run_main)."""
    from cellnet.run import process_main

    return process_main(argv)


def _cmd_job(argv: list[str]) -> int:
    """Submit and follow jobs on a running server with an admin kit (cellnet.admin.job_main)."""
    from cellnet.admin import job_main

    return job_main(argv)


def _cmd_simulate(argv: list[str]) -> int:
    """Run a job on a throw-away local federation (cellnet.simulate.simulate_main)."""
    from cellnet.simulate import simulate_main

    return simulate_main(argv)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cellnet",
        description="cellnet: federated computing on a peer-to-peer cell network.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("info", help="show the version, native build and CPU features")
    p.set_defaults(func=_cmd_info)

    # bench, provision and run parse their own arguments (see main); listed here for --help.
    sub.add_parser(
        "bench",
        help="run the benchmarks (bench/run.py) and print our figures beside the machine's",
        description="Run bench/run.py of the source checkout; arguments are passed on "
        "(e.g. --quick, --only pack crc, --json PATH).",
        add_help=False,
    )
    sub.add_parser(
        "provision",
        help="create a project CA and one startup kit per participant from a TOML project file",
        description="cellnet provision <project.toml> -o <dir> [--force]",
        add_help=False,
    )
    sub.add_parser(
        "run",
        help="start the server or a site cell from its startup kit (until SIGINT/SIGTERM)",
        description="cellnet run <startup-kit-dir> [--workspace DIR] [--host H] [--port P] "
        "[--connect-timeout S] [--job NAME] [-v]; see 'cellnet run --help'",
        add_help=False,
    )
    sub.add_parser(
        "job",
        help="submit, list, follow, abort jobs on a running server (admin startup kit)",
        description="cellnet job submit|list|status|abort|errors <admin-kit> ...; "
        "see 'cellnet job --help'",
        add_help=False,
    )
    sub.add_parser(
        "simulate",
        help="run a job folder on a throw-away local federation (server + N sites, mTLS)",
        description="cellnet simulate <job-folder> | --example NAME [-n N]; "
        "see 'cellnet simulate --help'",
        add_help=False,
    )
    return parser


#: Subcommands that own their argument parsing; ``main`` hands them the rest of argv.
_PASS_THROUGH = {
    "simulate": _cmd_simulate,
    "bench": _cmd_bench,
    "provision": _cmd_provision,
    "run": _cmd_run,
    "job": _cmd_job,
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in _PASS_THROUGH:
        return _PASS_THROUGH[argv[0]](argv[1:])
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
