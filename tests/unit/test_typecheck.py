"""pyproject.toml's [tool.mypy]: ``make typecheck`` checks src, tests and bench strictly,
and the per-module overrides only excuse third-party modules that ship no types."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
OURS = ("mailvet", "tests", *(p.stem for p in (ROOT / "bench").glob("*.py")))


def _mypy() -> dict[str, Any]:
    config: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))
    mypy: dict[str, Any] = config["tool"]["mypy"]
    return mypy


def test_strict_over_src_tests_and_bench() -> None:
    mypy = _mypy()
    assert mypy["strict"] is True
    files = {f.removeprefix("$MYPY_CONFIG_FILE_DIR/") for f in mypy["files"]}
    assert files == {"src/mailvet", "tests", "bench"}
    assert mypy["mypy_path"] == "$MYPY_CONFIG_FILE_DIR/src"  # this checkout's sources


def test_overrides_only_excuse_missing_third_party_types() -> None:
    for override in _mypy().get("overrides", []):
        assert set(override) == {"module", "ignore_missing_imports"}, override
        for module in override["module"]:
            assert module.split(".")[0] not in OURS, module
