"""``python -m tpt.catalog migrate PATH``: convert a catalog of an older schema (see tpt.catalog.migrate)."""

import argparse
import json

from tpt.catalog.migrate import migrate

parser = argparse.ArgumentParser(prog="python -m tpt.catalog")
commands = parser.add_subparsers(dest="command", required=True)
commands.add_parser("migrate", help="convert the catalog at PATH to the current schema").add_argument("path")
args = parser.parse_args()
print(json.dumps({"migrated": str(args.path), "rows": migrate(args.path)}))
