"""The docs stand on their own: no citation of material outside the repository, and every section of
docs/ that the code or the docs point to (a doc's path, then #, then the heading's anchor) exists."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Citations of reference notes that live outside the repository (users do not have them). Built from
# pieces so that this file does not match itself.
FOREIGN_CITATIONS = re.compile("|".join([
    r"(?<![\w/.-])shared/(?!vendor/calvin_env\.bundle)",  # CI's bundle path (.ci/run) is a path, not a citation
    r"calvin" r"-geometry",
    r"\bcalvin" r"\.md",  # lower case: docs/CALVIN.md is the project's own
    r"robovlms" r"\.md",
    "\u00a7",  # section signs numbered a foreign document's sections
]))
# A doc's path with an anchor anywhere, and relative links with an anchor inside docs/.
DOC_ANCHOR = re.compile(r"docs/([\w-]+\.md)#([\w-]+)")
RELATIVE_LINK = re.compile(r"\]\(([\w-]+\.md)?#([\w-]+)\)")


def _project_files() -> list[Path]:
    """Tracked and untracked-but-not-ignored files, outside CI's own scripts."""
    try:
        out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: the file list comes from git")
    return [ROOT / name for name in out.splitlines() if not name.startswith(".ci/") and (ROOT / name).is_file()]


def _text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError):
        return None


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(doc: Path) -> set[str]:
    anchors: set[str] = set()
    seen: dict[str, int] = {}
    in_fence = False
    for line in doc.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            in_fence = not in_fence
        elif not in_fence and (match := re.match(r"#{1,6} (.+)", line)):
            slug = _slug(match.group(1))
            anchors.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
            seen[slug] = seen.get(slug, 0) + 1
    return anchors


def test_slugs_follow_github():
    assert _slug("The real calvin_env (`env=calvin`)") == "the-real-calvin_env-envcalvin"
    assert _slug("Environment (`harness/envs/base.py`)") == "environment-harnessenvsbasepy"


def test_no_citation_of_files_outside_the_repository():
    this_file = Path(__file__).resolve()
    offenders = []
    for path in _project_files():
        text = _text(path)
        if text is None or path.resolve() == this_file:
            continue
        for number, line in enumerate(text.splitlines(), 1):
            if FOREIGN_CITATIONS.search(line):
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not offenders, "cite docs/ instead:\n" + "\n".join(offenders)


def test_every_cited_doc_section_exists():
    cache: dict[Path, set[str]] = {}
    missing = []
    for path in _project_files():
        text = _text(path)
        if text is None:
            continue
        cited = [(ROOT / "docs" / doc, anchor) for doc, anchor in DOC_ANCHOR.findall(text)]
        if path.parent == ROOT / "docs" and path.suffix == ".md":
            cited += [(path.parent / doc if doc else path, anchor) for doc, anchor in RELATIVE_LINK.findall(text)]
        for doc, anchor in cited:
            if not doc.is_file():
                missing.append(f"{path.relative_to(ROOT)}: {doc.relative_to(ROOT)} does not exist")
            elif anchor not in cache.setdefault(doc, _anchors(doc)):
                missing.append(f"{path.relative_to(ROOT)}: {doc.relative_to(ROOT)} has no section #{anchor}")
    assert not missing, "\n".join(missing)


def test_the_readme_names_every_installed_command():
    """Every `[project.scripts]` entry point is in the README's table of commands, with the module it runs."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10: the dev extra's tomli
        import tomli as tomllib

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    readme = (ROOT / "README.md").read_text()
    rows = [line for line in readme.splitlines() if line.startswith("| `vla-harness-")]
    for name, target in scripts.items():
        row = next((r for r in rows if f"`{name} " in r or f"`{name}`" in r), None)
        assert row is not None, f"{name} is not in the README's table of commands"
        module = target.split(":")[0].removesuffix(".__main__")
        assert f"python -m {module}" in row or name == "vla-harness-compare", (name, module, row)
