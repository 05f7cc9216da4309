"""`cutover check-config` on a sample of the config fuzzer's mutated files, as an operator runs
it: exit 0 with a summary, or exit 2 with one line per problem naming the file — never a
traceback, whatever the file holds."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from hypothesis import given

from tests.conftest import ROOT
from tests.fuzzing import fuzz
from tests.unit.proxy.test_fuzz_config import ENV, mutated_yaml


@fuzz(12)
@given(text_=mutated_yaml())
def test_fuzz_check_config_exits_0_or_2_with_one_line_per_problem(text_: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "cutover.yaml"
        path.write_text(text_, encoding="utf-8")
        result = subprocess.run(
            [sys.executable, "-m", "cutover", "check-config", str(path)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            env=dict(os.environ, **ENV),
        )
    assert "Traceback" not in result.stderr, result.stderr
    if result.returncode == 0:
        assert result.stdout.startswith(f"{path}: ok"), result.stdout
        return
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert lines, result.stderr
    for line in lines:
        assert line.startswith((f"{path}:", "builtin:")), line
