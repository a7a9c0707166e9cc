"""The docs say what the code does: generated references up to date, every option and config field the
guides name exists (and every config field is in the guide), README a front page, links that resolve."""
from __future__ import annotations

import re
from pathlib import Path

from pipelines import reference

ROOT = Path(__file__).resolve().parents[2]
DOCS = sorted((ROOT / "docs").rglob("*.md")) + [ROOT / "README.md", ROOT / "CONTRIBUTING.md"]


def test_generated_reference_and_flex_template_metadata_are_current():
    stale = [str(p.relative_to(ROOT)) for p, text in reference.outputs().items()
             if not p.exists() or p.read_text() != text]
    assert not stale, f"run python -m pipelines.reference: {stale}"


def test_every_option_the_docs_name_exists():
    from apache_beam.options.pipeline_options import PipelineOptions  # noqa: F401 - registers Beam's options

    from pipelines import admin, cli, ddl, regenerate, retention, runtime, validate

    known = cli.known_flags()
    for module in (admin, ddl, regenerate, retention, validate):
        known |= {o for a in module.build_parser()._actions for o in a.option_strings}
    fetch = runtime.build_parser()._subparsers._group_actions[0].choices["fetch"]
    known |= {o for a in fetch._actions for o in a.option_strings}
    # and the benchmark's (docs/performance.md)
    known |= set(re.findall(r'add_argument\("(--[a-z_]+)"', (ROOT / "benchmarks" / "compare.py").read_text()))
    # A flag with a hyphen inside is shown on purpose as a misspelling the job refuses.
    named = {(doc.name, flag) for doc in DOCS for flag in re.findall(r"`(--[a-z][a-z0-9_]*)(?![a-z0-9-])", doc.read_text())}
    unknown = sorted(f"{doc}: {flag}" for doc, flag in named if flag not in known)
    assert not unknown, unknown


def _fields(model, seen=None) -> set[str]:
    from pydantic import BaseModel

    seen = set() if seen is None else seen
    names = set()
    for name, field in model.model_fields.items():
        names.add(field.alias or name)
        for sub in reference._nested_models(field.annotation):
            if sub not in seen:
                seen.add(sub)
                names |= _fields(sub, seen)
    return names if issubclass(model, BaseModel) else set()


def test_configuration_guide_covers_every_field_and_names_no_unknown_key():
    from transforms.integrations import Integration
    from transforms.sinks import REGISTRY

    fields = _fields(Integration)
    for destination in REGISTRY.values():
        fields |= _fields(destination.config_model)
    guide = (ROOT / "docs" / "configuration.md").read_text() + (ROOT / "docs" / "events.md").read_text()
    undocumented = sorted(f for f in fields if not re.search(rf'[`."]{f}[`"]', guide))
    assert not undocumented, f"fields missing from docs/configuration.md: {undocumented}"
    keys = set()
    for line in (ROOT / "docs" / "configuration.md").read_text().splitlines():
        if line.startswith("| `"):
            keys |= set(re.findall(r"`([a-z][a-z0-9_]*)`", line.split("|")[1]))
    assert not sorted(keys - fields), f"keys in the guide's tables no model accepts: {sorted(keys - fields)}"


def test_readme_is_a_front_page_and_links_resolve():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 300
    broken = []
    for doc in DOCS:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", doc.read_text()):
            if "://" not in target and not (doc.parent / target).exists():
                broken.append(f"{doc.relative_to(ROOT)} -> {target}")
    assert not broken, broken
