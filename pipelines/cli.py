"""What every entry point that also takes Beam options shares: ``--help`` that lists our options with their
help and defaults, and unknown options refused (exit 2) instead of Beam's warning and a run with defaults.

Use::

    status = cli.check_argv(argv, [DeliveryOptions, ShuffleOptions], prog="python -m pipelines.deliver",
                            description=__doc__)
    if status is not None:
        return status        # 0 after printing --help, 2 after naming an unknown option

Beam registers its options classes as subclasses of ``PipelineOptions``; every class imported by then
(ours, Beam's standard, portable, GCP, AWS ...) contributes its flags to the set of known ones, as Beam's
own parsing does.
"""
from __future__ import annotations

import argparse
import difflib
import sys

from apache_beam.options.pipeline_options import PipelineOptions

COMMON_BEAM_OPTIONS = """\
Beam options are accepted as well, for example:
  --runner RUNNER                 FnApiRunner (default, batch), BundleBasedDirectRunner (default, streaming),
                                  PrismRunner, FlinkRunner, DataflowRunner, PortableRunner
  --direct_running_mode MODE      in_memory (default) or multi_processing (local runs)
  --direct_num_workers N          worker processes of a multi_processing local run
                                  (started fast; BEAMHOUSE_FAST_START=off in the environment: Beam's own start-up)
  --streaming                     streaming mode (implied by a streaming source)
  --project, --region, --temp_location, --staging_location   Dataflow
  --flink_master, --job_endpoint, --environment_type          Flink / portable runners
  --s3_endpoint_url, --s3_region_name ...                     Beam's S3 filesystem
See https://beam.apache.org/documentation/runners/ for each runner's options."""


class _OptionsParser(argparse.ArgumentParser):
    """An argparse parser that also takes Beam's ``add_value_provider_argument`` (templated options)."""

    def add_value_provider_argument(self, *args, **kwargs):
        return self.add_argument(*args, **kwargs)


def _parser(classes, **kwargs) -> _OptionsParser:
    parser = _OptionsParser(conflict_handler="resolve", allow_abbrev=False, **kwargs)
    for cls in classes:
        cls._add_argparse_args(parser)
    return parser


def _all_options_classes() -> list[type]:
    found, stack = [], [PipelineOptions]
    while stack:
        for sub in stack.pop().__subclasses__():
            if sub not in found:
                found.append(sub)
                stack.append(sub)
    return found


def known_flags(extra_parser: argparse.ArgumentParser | None = None) -> set[str]:
    """Every ``--flag`` of the options classes registered so far (and of ``extra_parser``)."""
    flags = set()
    for parser in (_parser(_all_options_classes(), add_help=False), extra_parser):
        if parser is not None:
            flags.update(o for action in parser._actions for o in action.option_strings)
    return flags


def unknown_options(argv, extra_parser: argparse.ArgumentParser | None = None) -> list[str]:
    """One message per ``--flag`` in ``argv`` that no options class knows, naming the nearest known one."""
    flags = known_flags(extra_parser)
    problems = []
    for token in argv:
        if not token.startswith("-") or token == "-" or token.lstrip("-")[:1].isdigit():
            continue
        flag = token.split("=", 1)[0]
        if flag in flags:
            continue
        near = difflib.get_close_matches(flag.replace("-", "_").replace("__", "--", 1), sorted(flags), n=1, cutoff=0.6)
        problems.append(f"{flag}: unknown option" + (f" (did you mean {near[0]}?)" if near else ""))
    return problems


def help_text(classes, prog: str, description: str) -> str:
    parser = _parser(classes, prog=prog, description=description, epilog=COMMON_BEAM_OPTIONS,
                     formatter_class=lambda prog: _Formatter(prog, width=110))
    return parser.format_help()


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults after each option's help; the description and the Beam options kept as written."""


def check_argv(argv, classes, prog: str, description: str) -> int | None:
    """0 after printing help for ``-h``/``--help``; 2 after listing unknown options; else None (go on)."""
    if "-h" in argv or "--help" in argv:
        print(help_text(classes, prog, description))
        return 0
    problems = unknown_options(argv)
    if problems:
        print(f"{len(problems)} command-line error(s):", file=sys.stderr)
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
        print(f"  ({prog} --help lists the options)", file=sys.stderr)
        return 2
    return None
