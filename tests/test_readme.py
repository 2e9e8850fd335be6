"""The README's first screen gives the two commands, and CI runs exactly the test command."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _commands(text):
    lines, out, inside = text.splitlines(), [], False
    for line in lines:
        if line.startswith("```"):
            inside = not inside
            continue
        if inside and line.startswith("python3 -m venv"):
            out.append(line.strip())
    return out


def test_readme_first_screen_has_main_and_test_commands():
    first_screen = "\n".join((ROOT / "README.md").read_text().splitlines()[:30])
    commands = _commands(first_screen)
    assert len(commands) >= 2
    assert any("vjepa2 " in c for c in commands), "no command running the main job"
    assert any("pytest" in c for c in commands), "no command running the tests"


def test_ci_runs_exactly_the_readme_test_command():
    test_cmd = next(c for c in _commands((ROOT / "README.md").read_text()) if "pytest" in c)
    ci = (ROOT / ".ci" / "run").read_text()
    assert test_cmd in ci.splitlines(), f"CI does not run the README test command:\n{test_cmd}"
