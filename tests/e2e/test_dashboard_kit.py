"""The browser kit's contract with the dashboard's browser tests (no browser needed):
issue 10 asks that each of them saves a screenshot of the page it checked."""

from __future__ import annotations

import ast
from pathlib import Path

HERE = Path(__file__).parent


def test_every_dashboard_browser_test_saves_a_screenshot() -> None:
    files = sorted(HERE.glob("test_dashboard_*.py"))
    files = [f for f in files if f.name != Path(__file__).name]
    assert files
    missing = []
    for path in files:
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                calls = {
                    n.func.id
                    for n in ast.walk(node)
                    if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
                }
                if "shot" not in calls:
                    missing.append(f"{path.name}::{node.name}")
    assert missing == [], f"browser tests that save no screenshot: {missing}"
