"""What a user reads (README, every command's --help, docs/) stays inside the repository."""

import re
from pathlib import Path

import pytest

from pipeline.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
#: Team notes that live beside the repository, never in it: a user cannot follow a pointer to them.
OUTSIDE = re.compile(r"\.\./shared|\b(DESIGN|DOMAIN|CARD|ENVIRONMENT)\.md\b")


def _help_texts() -> dict[str, str]:
    parser = build_parser()
    texts = {"smp": parser.format_help()}
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    for name, p in sub.choices.items():
        texts[f"smp {name}"] = p.format_help()
        for a in p._actions:
            if a.__class__.__name__ == "_SubParsersAction":
                texts.update({f"smp {name} {n}": q.format_help() for n, q in a.choices.items()})
    return texts


def _texts() -> dict[str, str]:
    texts = {"README.md": (ROOT / "README.md").read_text()}
    texts.update({f"docs/{p.name}": p.read_text() for p in sorted((ROOT / "docs").glob("*.md"))})
    texts.update(_help_texts())
    return texts


def test_nothing_points_outside_the_repository():
    bad = {name: OUTSIDE.findall(text) for name, text in _texts().items() if OUTSIDE.search(text)}
    assert not bad


@pytest.mark.parametrize(
    "name", ["design.md", "metrics.md", "card.md", "dots.md", "quality.md", "review.md", "web.md", "ARCHITECTURE.md"]
)
def test_every_page_the_readme_names_exists(name):
    assert f"docs/{name}" in (ROOT / "README.md").read_text()
    assert (ROOT / "docs" / name).is_file()


def test_every_docs_path_mentioned_exists():
    missing = set()
    for name, text in _texts().items():
        for ref in re.findall(r"\bdocs/[\w.-]+\.(?:md|png)", text):
            if not (ROOT / ref).is_file():
                missing.add((name, ref))
        if name.startswith("docs/"):  # links between the pages
            for ref in re.findall(r"\]\(([\w.-]+\.md)\)", text):
                if not (ROOT / "docs" / ref).is_file():
                    missing.add((name, ref))
    assert not missing


def test_every_photo_metric_is_defined_in_the_docs():
    import dataclasses

    from data.metrics import PhotoMetrics

    text = (ROOT / "docs" / "metrics.md").read_text()
    assert not [f.name for f in dataclasses.fields(PhotoMetrics) if f"`{f.name}`" not in text]
