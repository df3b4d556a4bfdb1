"""Each benchmark runs end to end at tiny scale (`--smoke`), so bench/ cannot rot. No timing is asserted:
the figures live in bench/RESULTS.md. Each benchmark uses its own *_bench* database (made by make test)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = sorted(p.stem for p in (ROOT / "bench").glob("*.py") if p.stem != "__init__")


@pytest.mark.slow
@pytest.mark.parametrize("name", BENCHMARKS)
def test_benchmark_smoke(name):
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRIDAPP_")}  # each picks its own database
    result = subprocess.run([sys.executable, "-m", f"bench.{name}", "--smoke"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert result.stdout.strip(), "a benchmark prints its figures"


def test_there_are_benchmarks():
    assert {"grid_queries", "sync_push", "sync_pull"} <= set(BENCHMARKS)
