"""The package stays readable: no function over 60 lines, no file over 400, the runner under 300 (docstrings and
comments count)."""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "python" / "eyas"
MAX_FUNCTION_LINES, MAX_FILE_LINES, MAX_RUNNER_LINES = 60, 400, 300


def _sizes():
    for path in sorted(PACKAGE.rglob("*.py")):
        source = path.read_text()
        yield path, len(source.splitlines()), [
            (node.name, node.lineno, node.end_lineno - node.lineno + 1) for node in ast.walk(ast.parse(source))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]


def test_functions_and_files_are_short():
    too_long = []
    for path, lines, functions in _sizes():
        name = path.relative_to(PACKAGE.parent)
        if lines > (MAX_RUNNER_LINES if name.as_posix() == "eyas/distill/runner.py" else MAX_FILE_LINES):
            too_long.append(f"{name}: {lines} lines")
        too_long += [f"{name}:{line} {fn}: {n} lines" for fn, line, n in functions if n > MAX_FUNCTION_LINES]
    assert not too_long, "split by meaning: " + "; ".join(too_long)


def test_the_walk_sees_the_package():
    """The size test would pass vacuously on an empty tree: check it finds the runner and the one episode loop."""
    found = {path.relative_to(PACKAGE).as_posix(): functions for path, _, functions in _sizes()}
    assert "distill/runner.py" in found and "envs/rollout.py" in found
    assert any(fn == "rollout" for fn, _, _ in found["envs/rollout.py"])
