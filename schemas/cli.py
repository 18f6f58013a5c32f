"""`schemas check` (the BACKWARD_TRANSITIVE gate) and `schemas register`.

Run alone as `python -m schemas.cli check`; `add_commands` mounts the same sub-commands under
the `gridstream` command line as `gridstream schemas check|register`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from confluent_kafka.schema_registry.error import SchemaRegistryError

from gridstream import config
from schemas import catalog, gate
from schemas.registry import Registry, RegistryConfig
from schemas.serde import RegistryUnavailable


def _fail(message: str, code: int) -> int:
    print(f"schemas: {message}", file=sys.stderr)
    return code


def _check(args: argparse.Namespace, settings: config.Settings) -> int:
    """Exit 0 when every chain is BACKWARD_TRANSITIVE (and the registry agrees), else 1."""
    try:
        found = catalog.load(args.dir)
    except catalog.CatalogError as err:
        return _fail(str(err), 1)
    findings = gate.check(found)
    for finding in findings:
        print(f"FAIL {finding}")
    if not findings:
        for chain in found.chains.values():
            print(f"ok   {chain.record}: v1..v{chain.newest.version} BACKWARD_TRANSITIVE")
    refused: list[str] = []
    if args.registry:
        registry = Registry(RegistryConfig.from_settings(settings, args.registry))
        try:
            refused = registry.refused(found)
        except (RegistryUnavailable, SchemaRegistryError) as err:
            return _fail(str(err), 2)
        for problem in refused:
            print(f"FAIL {problem}")
        if not refused:
            print(f"ok   registry {args.registry} accepts every newest version")
    return 1 if findings or refused else 0


def _register(args: argparse.Namespace, settings: config.Settings) -> int:
    """Register every version of every record, after the gate passes."""
    found = catalog.default()
    findings = gate.check(found)
    if findings:
        return _fail("the gate fails, nothing registered: run `schemas check`", 1)
    registry = Registry(RegistryConfig.from_settings(settings, args.registry))
    try:
        registrations = registry.register(found)
    except SchemaRegistryError as err:
        return _fail(f"the registry refused a schema: {err}", 1)
    except RegistryUnavailable as err:
        return _fail(str(err), 2)
    for done in registrations:
        print(f"{done.subject} v{done.version} -> schema id {done.schema_id}")
    return 0


def _add_subcommands(sub: Any) -> None:
    check = sub.add_parser("check", help="verify every schema chain is BACKWARD_TRANSITIVE")
    check.add_argument(
        "--dir", type=Path, default=catalog.AVRO_ROOT, help="schema tree (default: schemas/avro)"
    )
    check.add_argument(
        "--registry", metavar="URL", help="also ask this registry's compatibility endpoint"
    )
    check.set_defaults(run=_check)
    register = sub.add_parser("register", help="register every schema version in the registry")
    register.add_argument(
        "--registry", metavar="URL", help="registry URL (default: the local stack's registry)"
    )
    register.set_defaults(run=_register)


def add_commands(subparsers: Any) -> None:
    """Add `schemas check|register` to a parser's sub-parsers (the `gridstream` CLI's)."""
    schemas = subparsers.add_parser("schemas", help="the schema compatibility gate, registration")
    _add_subcommands(schemas.add_subparsers(dest="schemas_command", required=True))


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m schemas.cli check|register`."""
    parser = argparse.ArgumentParser(prog="python -m schemas.cli", description=__doc__)
    _add_subcommands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        settings = config.load()
    except config.ConfigError as err:
        return _fail(str(err), 2)
    return int(args.run(args, settings))


if __name__ == "__main__":
    sys.exit(main())
