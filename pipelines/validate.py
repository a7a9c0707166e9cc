"""Check an integrations file without running anything.

    python -m pipelines.validate examples/integrations.json

Exit 0 when valid; exit 2 listing every problem with its JSON path (values are never echoed, so a
secret in a wrong place does not reach the terminal).
"""
from __future__ import annotations

import argparse
import sys

from pipelines.problems import Parser
from transforms import configdb
from transforms.integrations import load_integrations
from transforms.secrets import iter_secrets


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="python -m pipelines.validate", allow_abbrev=False,
                                     description=__doc__.splitlines()[0])
    parser.add_argument("integrations", metavar="INTEGRATIONS_FILE",
                        help="the integrations file to check (or the management API's database URL)")
    parser.add_argument("--check-secrets", "--check_secrets", dest="check_secrets", action="store_true",
                        help="also resolve every secret (env:, file:, inline) and parse the ones with a format "
                             "(service account keys, PEM private keys); no network")
    return parser


def secret_problems(integrations) -> list[str]:
    """Every secret resolved and, where it has a format, parsed (no network; never a value printed)."""
    from transforms.secrets import format_problem, iter_secrets

    problems = []
    for i, integ in enumerate(integrations):
        for path, secret in iter_secrets(integ.config, "config."):
            problem = secret.check()
            if problem is None:
                passphrase = getattr(integ.config, "private_key_passphrase", None)
                try:
                    phrase = passphrase.get() if passphrase is not None else None
                except Exception:  # noqa: BLE001 - its own entry reports it
                    phrase = None
                problem = format_problem(path, secret.get(), phrase)
            if problem:
                problems.append(f"$[{i}].{path} ({integ.integration_id}): {problem}")
    return problems


def main(argv=None) -> int:
    try:
        args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    except SystemExit as exc:  # argparse: 0 after --help, 2 after a usage error
        return int(exc.code or 0)
    path = args.integrations
    integrations, errors = load_integrations(path)
    if not errors and args.check_secrets:
        errors = secret_problems(integrations)
    shown = configdb.display_url(path) if configdb.is_database_url(path) else path
    if errors:
        print(f"{shown}: {len(errors)} problem(s):", file=sys.stderr)
        for err in errors:
            print(f"  {err}", file=sys.stderr)
        return 2
    for integ in integrations:
        state = "enabled" if integ.enabled else "disabled"
        if any(True for _ in iter_secrets(integ.config)):
            state += "; secrets resolved and parsed" if args.check_secrets else \
                "; secrets not checked (--check-secrets resolves and parses them)"
        print(f"ok  {integ.integration_id}  vendor={integ.vendor}  source_id={integ.source_id}  ({state})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
