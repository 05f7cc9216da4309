"""The PrometheusRule helm/cutover renders: `promtool check rules` accepts it and
`promtool test rules` (tests/helm/rules_test.yaml) shows each alert firing when it should and
staying silent when it should not."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.helm.chart_helpers import case_values, render

HERE = Path(__file__).resolve().parent
# Alerts whose annotations rules_test.yaml spells out; the others are tested on their labels.
ANNOTATED = {"CutoverCanaryRolledBack", "CutoverOutboxStalled", "CutoverBackendErrors"}


@pytest.fixture(scope="module")
def groups() -> list[dict]:
    return render(case_values("gateway-ha")).one("PrometheusRule")["spec"]["groups"]


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("promtool")
    assert exe, "promtool is missing (Debian package prometheus; .ci/run installs it)"
    return subprocess.run(
        [exe, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def test_promtool_checks_the_rendered_rules(groups: list[dict], tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": groups}))
    result = promtool("check", "rules", "rules.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 11 rules found" in result.stdout


def test_promtool_unit_tests_every_alert(groups: list[dict], tmp_path: Path) -> None:
    for group in groups:
        for rule in group["rules"]:
            if rule["alert"] not in ANNOTATED:
                rule.pop("annotations", None)
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": groups}))
    spec = yaml.safe_load((HERE / "rules_test.yaml").read_text())
    spec["rule_files"] = ["rules.yaml"]
    tested = {t["alertname"] for case in spec["tests"] for t in case["alert_rule_test"]}
    assert tested == {r["alert"] for g in groups for r in g["rules"]}  # every alert is tested
    (tmp_path / "rules_test.yaml").write_text(yaml.safe_dump(spec))
    result = promtool("test", "rules", "rules_test.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_disabled_alert_is_left_out() -> None:
    values = case_values("gateway-ha")
    values["prometheusRule"]["disabled"] = {"CutoverBackendErrors": True}
    rules = render(values).one("PrometheusRule")["spec"]["groups"][0]["rules"]
    assert "CutoverBackendErrors" not in {r["alert"] for r in rules}
    assert len(rules) == 10
