"""Every relative link in README.md and docs/*.md leads somewhere: to a file that exists and, for `#anchor` links
into Markdown, to a heading that GitHub would give that anchor. External http(s) links are not fetched."""

from __future__ import annotations

import itertools
import unicodedata
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from markdown_it import MarkdownIt
from markdown_it.token import Token

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_LINES = 250

# GitHub-flavoured where it matters here: links inside tables count (linkify would need another package, and
# bare URLs are never relative).
_MARKDOWN = MarkdownIt("commonmark").enable("table")


@dataclass(frozen=True)
class Link:
    page: Path
    line: int
    target: str


def _inline_tokens(text: str) -> Iterator[tuple[Token, Token]]:
    """(the block token that carries a line number, each inline child) of a Markdown text."""
    for block in _MARKDOWN.parse(text):
        for child in block.children or []:
            yield block, child


_TARGET_ATTRIBUTE = {"link_open": "href", "image": "src"}


def links(page: Path) -> list[Link]:
    """The link and image targets of a page, with the line they are on (code blocks hold none)."""
    found = []
    for block, token in _inline_tokens(page.read_text()):
        attribute = _TARGET_ATTRIBUTE.get(token.type)
        target = token.attrGet(attribute) if attribute else None
        if isinstance(target, str):
            found.append(Link(page, (block.map or [0])[0] + 1, target))
    return found


# Letters, marks, numbers and connector punctuation (`_`): what github-slugger keeps besides space and hyphen.
_SLUG_CATEGORIES = {"Lu", "Ll", "Lt", "Lm", "Lo", "Mn", "Mc", "Me", "Nd", "Nl", "No", "Pc"}


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading's text (github-slugger): lower case, then every character that is not a
    letter, mark, number, connector (`_`), hyphen or space removed, then each space a hyphen."""
    kept = (c for c in heading.lower() if c in " -" or unicodedata.category(c) in _SLUG_CATEGORIES)
    return "".join(kept).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every heading's anchor on a page; a repeated slug gets -1, -2, ... as on GitHub."""
    tokens = _MARKDOWN.parse(page.read_text())
    seen: Counter[str] = Counter()
    result = set()
    for opening, inline in itertools.pairwise(tokens):
        if opening.type != "heading_open":
            continue
        text = "".join(child.content for child in inline.children or [] if child.type in ("text", "code_inline"))
        slug = github_slug(text)
        result.add(f"{slug}-{seen[slug]}" if seen[slug] else slug)
        seen[slug] += 1
    return result


def broken(link: Link) -> str | None:
    """Why a link leads nowhere, or None when it resolves (or is not relative: not checked)."""
    parts = urlsplit(link.target)
    if parts.scheme or parts.netloc:
        return None
    target = (link.page.parent / unquote(parts.path)).resolve() if parts.path else link.page
    if not target.exists():
        return f"no file {target.relative_to(ROOT) if target.is_relative_to(ROOT) else target}"
    if parts.fragment and target.suffix == ".md" and unquote(parts.fragment) not in anchors(target):
        return f"no heading with anchor #{parts.fragment} in {target.name}"
    return None


def problems(pages: list[Path]) -> list[str]:
    return [
        f"{link.page.name}:{link.line}: {link.target}: {why}"
        for page in pages
        for link in links(page)
        if (why := broken(link)) is not None
    ]


def test_every_relative_link_resolves() -> None:
    # Given the README and every docs page
    # When following each relative link and anchor
    # Then each reaches an existing file and, in Markdown, an existing heading
    assert [page.name for page in PAGES[1:]], "docs/ has no pages"
    assert problems(PAGES) == []


def test_the_readme_stays_one_page() -> None:
    lines = len((ROOT / "README.md").read_text().splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines: move detail to a docs/ page"


@pytest.mark.parametrize(
    ("heading", "slug"),
    [
        (
            "Serving: ONNX Runtime by default, scikit-learn as the fallback",
            "serving-onnx-runtime-by-default-scikit-learn-as-the-fallback",
        ),
        (
            "Requests: `POST /predict`, `Content-Type: application/json`",
            "requests-post-predict-content-type-applicationjson",
        ),
        ("Configuration (environment variables)", "configuration-environment-variables"),
        ("With Docker: `sam local`", "with-docker-sam-local"),
        (
            "Walkthrough: from your CSV to a deployed, scheduled, rollback-able endpoint",
            "walkthrough-from-your-csv-to-a-deployed-scheduled-rollback-able-endpoint",
        ),
        ("snake_case and Ünïcode — dash", "snake_case-and-ünïcode--dash"),
    ],
)
def test_anchors_follow_githubs_slug_rules(heading: str, slug: str, tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(f"# {heading}\n\n## {heading}\n")
    assert anchors(page) == {slug, f"{slug}-1"}


def test_a_broken_link_or_anchor_is_reported(tmp_path: Path) -> None:
    # Given a page with a good file link, a good anchor, a missing file, a missing heading, and an external link
    (tmp_path / "other.md").write_text("# Other page\n\n## Deploy to AWS\n")
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n\n"
        "[ok](other.md) and [ok too](other.md#deploy-to-aws) and [here](#page)\n\n"
        "[gone](missing.md)\n\n"
        "![gone too](missing.png)\n\n"
        "[wrong anchor](other.md#deploy)\n\n"
        "[not fetched](https://example.com/missing)\n\n"
        "```\n[inside code](nowhere.md)\n```\n"
    )
    # When checking it
    found = problems([page])
    # Then exactly the two missing files and the missing heading are reported, with their lines
    assert len(found) == 3
    assert found[0].startswith("page.md:5: missing.md: no file ")
    assert found[1].startswith("page.md:7: missing.png: no file ")
    assert found[2] == "page.md:9: other.md#deploy: no heading with anchor #deploy in other.md"
