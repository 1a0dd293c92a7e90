"""The documentation cannot fall behind: the layout page names every module, the site builds
strictly (no warning, no broken link), and every relative link of the README points at a file."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path


ROOT = Path(__file__).resolve().parents[2]
LAYOUT = ROOT / "docs" / "layout.md"
PACKAGE_DIRS = ("tasks", "workers", "config", "dockyard")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def tracked_files() -> list[str]:
    """Every .py module of the packages and every file of benchmarks/ (not its results), as repo paths."""
    found: list[Path] = []
    for folder in PACKAGE_DIRS:
        found += (ROOT / folder).rglob("*.py")
    found += [path for path in (ROOT / "benchmarks").rglob("*") if path.is_file()]
    names = []
    for path in found:
        relative = path.relative_to(ROOT)
        if "__pycache__" in relative.parts or relative.parts[:2] == ("benchmarks", "results"):
            continue
        if relative.suffix == ".pyc":
            continue
        names.append(relative.as_posix())
    return sorted(names)


def named_in(page: str, path: str) -> bool:
    return f"`{path}`" in page


def test_layout_names_every_module() -> None:
    page = LAYOUT.read_text()
    files = tracked_files()
    assert len(files) > 50, files  # the walk found the tree
    missing = [path for path in files if not named_in(page, path)]
    assert not missing, f"docs/layout.md does not name: {missing}"


def test_layout_names_no_module_that_is_gone() -> None:
    page = LAYOUT.read_text()
    named = re.findall(r"`((?:tasks|workers|config|dockyard|benchmarks)/[^`\s]+\.(?:py|sh|md))`", page)
    gone = sorted({path for path in named if not (ROOT / path).exists()})
    assert not gone, f"docs/layout.md names files that do not exist: {gone}"


def test_layout_check_fails_without_a_line() -> None:
    """The check above is not vacuous: a page without one module's line misses it."""
    page = LAYOUT.read_text()
    path = "tasks/errors.py"
    stripped = "\n".join(line for line in page.splitlines() if f"`{path}`" not in line)
    assert named_in(page, path) and not named_in(stripped, path)


def test_mkdocs_build_is_strict_clean(tmp_path: Path) -> None:
    assert importlib.util.find_spec("mkdocs"), "mkdocs is missing: it is in the test extra (pip install -e '.[test]')"
    completed = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(ROOT / "mkdocs.yml"),
         "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output
    assert "WARNING" not in output, output
    assert (tmp_path / "site" / "index.html").exists()


def relative_links(markdown: str) -> list[str]:
    text = re.sub(r"```.*?```", "", markdown, flags=re.S)  # no links inside code blocks
    links = [target for target in LINK.findall(text)]
    return [link for link in links if not re.match(r"^[a-z][a-z0-9+.-]*:", link) and not link.startswith("#")]


def test_readme_relative_links_point_at_files() -> None:
    readme = (ROOT / "README.md").read_text()
    links = relative_links(readme)
    assert links, "the README links into docs/"
    broken = [link for link in links if not (ROOT / link.split("#", 1)[0]).exists()]
    assert not broken, f"README.md links to files that do not exist: {broken}"


def test_readme_links_every_docs_page() -> None:
    readme = (ROOT / "README.md").read_text()
    linked = {link.split("#", 1)[0] for link in relative_links(readme)}
    pages = {f"docs/{page.name}" for page in (ROOT / "docs").glob("*.md")}
    assert not pages - linked, f"README.md does not link: {sorted(pages - linked)}"
