"""CONTRIBUTING's map of the package stays true: every module it lists exists, every module of the
package is listed, and the tour points at files and names that exist."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "vjepa2"


def listed_modules() -> set[str]:
    """Paths (relative to ``src/vjepa2``) of the ``.py`` files named in the map, from its indentation."""
    text = (ROOT / "CONTRIBUTING.md").read_text()
    block = text.split("## Where things live", 1)[1].split("```", 2)[1]
    lines = block.splitlines()
    assert lines[1].strip() == "src/vjepa2/", "the map starts at src/vjepa2/"
    folders: list[tuple[int, str]] = []  # (indent, name) of the enclosing folders
    found = set()
    for line in lines[2:]:
        if not line.startswith("  "):
            break  # benchmarks/, tests/: outside the package
        indent = len(line) - len(line.lstrip())
        name = line.split()[0]
        while folders and folders[-1][0] >= indent:
            folders.pop()
        if name.endswith("/"):
            folders.append((indent, name.rstrip("/")))
        elif name.endswith(".py"):
            found.add("/".join([f for _, f in folders] + [name]))
    return found


def test_contributing_lists_every_module_of_the_package_and_nothing_else():
    actual = {p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*.py") if p.name != "__init__.py"}
    listed = listed_modules()
    assert not actual - listed, f"modules missing from CONTRIBUTING.md: {sorted(actual - listed)}"
    assert not listed - actual, f"CONTRIBUTING.md lists modules that do not exist: {sorted(listed - actual)}"


def test_the_tour_names_files_and_functions_that_exist():
    text = (ROOT / "CONTRIBUTING.md").read_text()
    tour = text.split("## A newcomer's tour", 1)[1].split("\n## ", 1)[0]
    for item in re.findall(r"- \*\*.*?(?=\n- \*\*|\Z)", tour, flags=re.S):
        path = ROOT / re.search(r"`(src/vjepa2/[\w/]+\.py)`", item).group(1)
        assert path.is_file(), path
        source = path.read_text()
        names = [n for n in re.findall(r"`(\w+(?:\.\w+)?)`", item) if not n.endswith("py")]
        for name in names:
            assert re.search(rf"(def|class) {name.split('.')[-1]}\b", source), f"{name} not in {path.name}"
