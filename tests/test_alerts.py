"""The monitoring role's alert rules and dashboard: the rules pass `promtool test rules`, and
every metric that a rule or a dashboard panel queries is one the real server serves (or one the
rules record, or one Prometheus and the blackbox exporter make)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.request
from pathlib import Path

import jinja2
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import StartProcess, require_binary

REPO = Path(__file__).resolve().parent.parent
MONITORING = REPO / "ansible" / "roles" / "monitoring"
RULES = MONITORING / "files" / "fileshare.rules.yml"
DASHBOARD = MONITORING / "files" / "fileshare-dashboard.json"
CAPACITY = MONITORING / "templates" / "fileshare-capacity.rules.yml.j2"
# Made by Prometheus itself (up) and by the blackbox exporter's probes of the front and coturn.
EXTERNAL = {"up", "probe_success", "probe_ssl_earliest_cert_expiry"}
PROMQL_WORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}


def render_capacity(where: Path, capacity: int = 2000, per_peer: int = 3) -> Path:
    template = jinja2.Template(CAPACITY.read_text(), undefined=jinja2.StrictUndefined)
    path = where / "fileshare-capacity.rules.yml"
    path.write_text(
        template.render(
            ansible_managed="test",
            monitoring_turn_allocation_capacity=capacity,
            monitoring_turn_allocations_per_peer=per_peer,
        )
    )
    return path


def test_alert_rules_pass_promtool(tmp_path: Path) -> None:
    promtool = require_binary("promtool")
    shutil.copy(RULES, tmp_path)
    shutil.copy(REPO / "tests" / "prometheus" / "alerts_test.yml", tmp_path)
    capacity = render_capacity(tmp_path)
    for argv in (
        ["check", "rules", str(tmp_path / RULES.name), str(capacity)],
        ["test", "rules", str(tmp_path / "alerts_test.yml")],
    ):
        done = subprocess.run(
            [promtool, *argv], capture_output=True, text=True, timeout=120, check=False
        )
        assert done.returncode == 0, done.stdout + done.stderr


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads: identifiers outside label matchers, ranges
    and grouping clauses, that are not functions, aggregations or keywords."""
    bare = re.sub(r"\{[^}]*\}|\[[^\]]*\]|\b(by|without|on|ignoring)\s*\([^)]*\)", " ", expr)
    bare = re.sub(r'"[^"]*"', " ", bare)
    names = set(re.findall(r"(?<![\w.])([a-zA-Z_:][\w:]*)\b(?!\s*\()", bare))
    return names - PROMQL_WORDS


def queries() -> dict[str, str]:
    found: dict[str, str] = {}
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            found[f"alert {rule['alert']}"] = rule["expr"]
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        for target in panel["targets"]:
            found[f"panel {panel['title']} {target['refId']}"] = target["expr"]
    return found


def test_metric_names_are_read_from_promql() -> None:
    expr = 'sum by (instance, le) (rate(a_bucket{job="x", le="+Inf"}[5m])) > 0.2 * scalar(b)'
    assert metric_names(expr) == {"a_bucket", "b"}


async def test_every_queried_metric_exists(start_process: StartProcess, tmp_path: Path) -> None:
    server = await start_process()
    with urllib.request.urlopen(f"{server.http}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    served: set[str] = set()
    for family in text_string_to_metric_families(text):
        served.add(family.name)
        suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum")}
        served.update(family.name + s for s in suffixes.get(family.type, ()))
        served.update(sample.name for sample in family.samples)
    capacity = yaml.safe_load(render_capacity(tmp_path).read_text())
    recorded = {rule["record"] for group in capacity["groups"] for rule in group["rules"]}
    missing = {
        where: sorted(metric_names(expr) - served - recorded - EXTERNAL)
        for where, expr in queries().items()
    }
    assert not {k: v for k, v in missing.items() if v}, missing
    assert len(queries()) > 20
