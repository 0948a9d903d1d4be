"""``python -m infra.otelcol fetch|build|path``: download the Collector modules, build the
tail sampling harness into the cache, or print where it is."""

from __future__ import annotations

import argparse
import sys

from infra.otelcol import OtelcolSetupError, binary_path, build, fetch


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m infra.otelcol", description=__doc__)
    ap.add_argument("command", choices=("fetch", "build", "path"))
    args = ap.parse_args(argv)
    try:
        if args.command == "fetch":
            fetch()
        elif args.command == "build":
            print(build())
        else:
            print(binary_path())
    except OtelcolSetupError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
