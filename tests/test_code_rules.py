"""Rules of the codebase that a reviewer would otherwise have to remember."""
import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# geo/ is pure: the standard library, shapely, pyproj, numpy, and pyogrio inside geo/io only.
GEO_ALLOWED = {"shapely", "pyproj", "numpy", "geo"}
# The export writers (issue 7) may use their format libraries: pyshp (`shapefile`) and matplotlib.
GEO_WRITERS_ALLOWED = {"shapefile", "matplotlib"}


def _imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_geo_is_pure():
    stdlib = set(sys.stdlib_module_names)
    for path in (ROOT / "geo").rglob("*.py"):
        allowed = GEO_ALLOWED | ({"pyogrio"} if "io" in path.relative_to(ROOT / "geo").parts[:-1] else set())
        allowed |= GEO_WRITERS_ALLOWED if "writers" in path.relative_to(ROOT / "geo").parts[:-1] else set()
        foreign = _imported_roots(path) - stdlib - allowed
        assert not foreign, f"{path.relative_to(ROOT)} imports {sorted(foreign)}"


def test_services_and_jobs_do_not_import_the_web_layer():
    for package in ("services", "jobs", "models"):
        for path in (ROOT / "gridapp" / package).rglob("*.py"):
            source = path.read_text(encoding="utf-8")
            assert "gridapp.api" not in source and "flask import request" not in source, path


def test_ruff_finds_nothing():
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", str(ROOT)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
