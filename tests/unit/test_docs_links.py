"""Every relative link in the repository's Markdown resolves inside the repository, anchors included.

A link is checked the way GitHub renders it: relative to the file (a leading `/` means the repository's
root), to a file or folder git would commit (tracked, or new and not ignored), never out of the
repository; a `#fragment` into a Markdown file must name one of its headings by GitHub's slug rule
(lowercase, punctuation dropped, spaces to hyphens, `-1`, `-2`, ... for repeats) or an explicit
`id`/`name` anchor. Links inside code are not links. Hand-written because the well-kept link checkers
are not Python packages (lychee, markdown-link-check) or check only what a browser sees.
"""

import re
import subprocess
from collections import Counter
from pathlib import Path
from urllib.parse import unquote

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1")
# [text](target) and ![alt](target); the text may hold one level of brackets (e.g. [`x[0]`](y)).
_INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*(<[^>]*>|[^()\s]+)(?:\s+[\"'(][^)]*)?\s*\)")
_REFERENCE_DEFINITION = re.compile(r"^ {0,3}\[[^\]]+\]:\s*(<[^>]*>|\S+)")
_HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
_HTML_ANCHOR = re.compile(r"<a\s[^>]*(?:id|name)=[\"']([^\"']+)[\"']", re.IGNORECASE)
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def repository_files() -> set[str]:
    """What git would commit: tracked files and new files that are not ignored (repo-relative paths)."""
    listing = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO_ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    return {path for path in listing.split("\0") if path and (REPO_ROOT / path).exists()}


def outside_code_fences(text: str) -> list[str]:
    """Every line, with the lines of fenced code blocks (fences included) blanked out."""
    lines, fence = [], ""
    for line in text.splitlines():
        opening = _FENCE.match(line)
        if not fence and opening:
            fence = opening.group(1)
        elif fence:
            stripped = line.strip()
            if stripped.startswith(fence) and not stripped.strip(fence[0]):
                fence = ""
        else:
            lines.append(line)
            continue
        lines.append("")
    return lines


def links(text: str) -> list[str]:
    targets = []
    for line in outside_code_fences(text):
        prose = _CODE_SPAN.sub(lambda span: " " * len(span.group(0)), line)
        targets += [match.group(1) for match in _INLINE_LINK.finditer(prose)]
        definition = _REFERENCE_DEFINITION.match(prose)
        if definition:
            targets.append(definition.group(1))
    return [target.strip("<>") for target in targets]


def github_slug(heading: str) -> str:
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading: its text
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(text: str) -> set[str]:
    """The fragments a Markdown file answers to: its headings' slugs and its explicit anchors."""
    found: set[str] = set()
    seen: Counter[str] = Counter()
    for line in outside_code_fences(text):
        heading = _HEADING.match(line)
        if heading:
            slug = github_slug(heading.group(2))
            found.add(f"{slug}-{seen[slug]}" if seen[slug] else slug)
            seen[slug] += 1
        found.update(_HTML_ANCHOR.findall(line))
    return found


def resolve(target: str, markdown: Path, root: Path) -> tuple[Path, str]:
    """The file or folder a relative link points at, and its fragment."""
    path_part, _, fragment = target.partition("#")
    path_part = unquote(path_part.split("?", 1)[0])
    if not path_part:
        return markdown.resolve(), unquote(fragment)
    base = root if path_part.startswith("/") else markdown.parent
    return (base / path_part.lstrip("/")).resolve(), unquote(fragment)


def broken_links(markdown: Path, root: Path, files: set[str]) -> list[str]:
    """Every relative link of `markdown` that does not resolve inside `root`, with the reason."""
    root = root.resolve()
    folders = {parent.as_posix() for path in files for parent in Path(path).parents}
    problems = []
    for target in links(markdown.read_text(encoding="utf-8")):
        if _SCHEME.match(target) or target.startswith("//"):
            continue  # absolute URLs (https:, mailto:) are not this test's business
        resolved, fragment = resolve(target, markdown, root)
        if not resolved.is_relative_to(root):
            problems.append(f"{target}: leaves the repository")
        elif (relative := resolved.relative_to(root).as_posix()) not in files | folders:
            problems.append(f"{target}: no such file in the repository")
        elif fragment and relative.endswith(".md") and fragment not in anchors(resolved.read_text("utf-8")):
            problems.append(f"{target}: no heading or anchor #{fragment} in {relative}")
    return problems


FILES = repository_files()
MARKDOWN = sorted(path for path in FILES if path.endswith(".md"))


def test_the_docs_are_found() -> None:
    assert {"README.md", "docs/README.md", "events/README.md"} <= set(MARKDOWN)


@pytest.mark.parametrize("markdown", MARKDOWN)
def test_every_relative_link_resolves_inside_the_repository(markdown: str) -> None:
    assert broken_links(REPO_ROOT / markdown, REPO_ROOT, FILES) == []


# -- the checker itself --------------------------------------------------------------------------------


def scratch_repository(tmp_path: Path, files: dict[str, str]) -> set[str]:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    return set(files)


def test_it_reports_a_missing_file_an_escape_a_missing_anchor_and_an_untracked_target(tmp_path) -> None:
    (tmp_path / "repo").mkdir()
    (tmp_path / "outside.md").write_text("# Outside\n")
    (tmp_path / "repo" / "build.log").write_text("not committed\n")
    root = tmp_path / "repo"
    files = scratch_repository(
        root,
        {
            "README.md": (
                "See [docs](docs/guide.md#set-up), [gone](docs/gone.md), [up](../outside.md),\n"
                "[no anchor](docs/guide.md#nowhere), [log](build.log), [self](#intro).\n"
            ),
            "docs/guide.md": "# Guide\n\n## Set up\n",
        },
    )
    assert broken_links(root / "README.md", root, files) == [
        "docs/gone.md: no such file in the repository",
        "../outside.md: leaves the repository",
        "docs/guide.md#nowhere: no heading or anchor #nowhere in docs/guide.md",
        "build.log: no such file in the repository",
        "#intro: no heading or anchor #intro in README.md",
    ]


def test_it_accepts_what_github_resolves(tmp_path) -> None:
    files = scratch_repository(
        tmp_path,
        {
            "README.md": (
                "# Intro\n"
                "[a](docs/guide.md#try-it-make-demo) [b](docs/guide.md#set-up-1) [c](/docs/guide.md)\n"
                '[d](docs/) [e](<docs/guide.md#events-on-the-bus-consuming-events> "title")\n'
                "[f](docs/guide.md#poller--eventbridge-scheduler) [g](#intro) [h]: docs/guide.md#anchor\n"
                "[i](https://example.com/missing.md) [`x[0]`](docs/guide.md#poll_due_at)\n"
            ),
            "docs/guide.md": (
                "# Try it: `make demo`\n## Set up\n## Set up\n## Events on the bus (consuming events)\n"
                '## poller/ — EventBridge Scheduler\n## `poll_due_at`\n<a id="anchor"></a>\n'
            ),
        },
    )
    assert broken_links(tmp_path / "README.md", tmp_path, files) == []


def test_links_and_headings_in_code_do_not_count(tmp_path) -> None:
    files = scratch_repository(
        tmp_path,
        {
            "README.md": (
                "```bash\n# not a heading\necho '[x](missing.md)'\n```\n"
                "Inline `[y](missing.md)` is code too. [z](#not-a-heading)\n"
            ),
        },
    )
    assert broken_links(tmp_path / "README.md", tmp_path, files) == [
        "#not-a-heading: no heading or anchor #not-a-heading in README.md"
    ]
