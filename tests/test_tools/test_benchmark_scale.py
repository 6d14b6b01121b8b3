"""benchmarks/benchmark_scale.py --quick, run as the docs show it."""
import re
import subprocess
import sys

import pytest
from helpers import REPO

ROW = re.compile(r'^\| ([\d,]+) \| ([\d,]+) \| ([\d.]+) \| ([\d.]+) \| '
                 r'([\d.]+) \| ([\d.]+) \| ([\d.]+) \|$')


def test_benchmark_scale_quick_prints_the_table():
    out = subprocess.run(
        [sys.executable, 'benchmarks/benchmark_scale.py', '--quick'],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [ROW.match(line) for line in out.stdout.splitlines()]
    rows = [m.groups() for m in rows if m]
    assert len(rows) == 1, out.stdout
    n, kept, resident, peak, ratio, checkpoint, seconds = rows[0]
    assert n == '100,000'
    assert 50_000 < int(kept.replace(',', '')) < 100_000  # it pruned
    # The layout's promise: at most 9 bytes per sample held and saved
    # (score, seen bit, weight code, int32 order), under 2x while deciding.
    assert 8 <= float(resident) <= 9.2
    assert float(checkpoint) <= 9.5
    assert float(resident) <= float(peak) <= 2 * float(resident)
    # The ratio of the unrounded figures: within rounding of the printed.
    assert float(ratio) == pytest.approx(
        float(peak) / float(resident), abs=0.011)
    assert 0 < float(seconds) < 5
