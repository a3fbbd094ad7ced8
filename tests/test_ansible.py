"""The Ansible tree without deploying it (the deploy itself is tests/test_deploy.py): the example
production inventory with its example vault, the playbook's syntax, and the one coturn template."""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jinja2
import jinja2.meta
import pytest
import yaml

from netsim.certs import self_signed
from netsim.processes import find_program, free_port
from tests.conftest import require_binary
from tests.test_turn import TLS_NAME, free_udp_tcp_port
from tests.test_turn import settings as turn_settings
from turn.launcher import running_turn

ANSIBLE_DIR = Path(__file__).resolve().parent.parent / "ansible"
PRODUCTION = ANSIBLE_DIR / "inventories" / "production"
EXAMPLE_VAULT_PASSWORD = "fileshare-example-vault"  # documented in ansible/README.md


def ansible(tool: str, *args: str, tmp_path: Path) -> str:
    password = tmp_path / "vault-password"
    password.write_text(EXAMPLE_VAULT_PASSWORD + "\n")
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(ANSIBLE_DIR / "ansible.cfg"),
        "ANSIBLE_VAULT_PASSWORD_FILE": str(password),
        "ANSIBLE_NOCOLOR": "1",
    }
    done = subprocess.run(
        [str(Path(sys.executable).with_name(tool)), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ANSIBLE_DIR,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_production_inventory_has_every_group_and_a_vault_of_dummies(tmp_path: Path) -> None:
    listed = json.loads(
        ansible("ansible-inventory", "-i", str(PRODUCTION), "--list", tmp_path=tmp_path)
    )
    for group in ("lb", "signaling", "turn", "redis", "prometheus"):
        assert listed[group]["hosts"], group
    hostvars = listed["_meta"]["hostvars"]
    for host, values in hostvars.items():
        assert values["fileshare_private_ip"], host
        assert values["vault_fileshare_turn_secret"].startswith("EXAMPLE-NOT-A-SECRET")
    vault = (PRODUCTION / "group_vars" / "all" / "vault.yml").read_text()
    assert vault.startswith("$ANSIBLE_VAULT;"), "the example vault must stay encrypted"


def test_site_yml_passes_the_syntax_check(tmp_path: Path) -> None:
    ansible(
        "ansible-playbook", "-i", str(PRODUCTION), "--syntax-check", "site.yml", tmp_path=tmp_path
    )


def test_coturn_role_renders_the_one_turn_template() -> None:
    role_template = ANSIBLE_DIR / "roles" / "coturn" / "templates" / "turnserver.conf.j2"
    assert role_template.is_symlink()
    assert role_template.resolve() == ANSIBLE_DIR.parent / "turn" / "turnserver.conf.j2"


# Names a role may read without declaring them: Ansible's own, and the facts it registers.
ANSIBLE_NAMES = {"ansible_managed", "item", "inventory_hostname", "playbook_dir", "omit"}


class _AnyName(dict[str, Any]):
    def __contains__(self, _: object) -> bool:
        return True

    def get(self, _: str, default: Any = None) -> Any:
        return print


def _expressions(node: Any, key: str = "") -> Iterator[str]:
    """Every Jinja text of a task file: templated strings, and the bare expressions of
    `when`, `that`, `until`, `changed_when` and `failed_when`."""
    if isinstance(node, dict):
        for name, value in node.items():
            yield from _expressions(value, str(name))
    elif isinstance(node, list):
        for value in node:
            yield from _expressions(value, key)
    elif isinstance(node, str):
        if key in {"when", "that", "until", "changed_when", "failed_when"}:
            yield "{{ " + node + " }}"
        elif "{{" in node or "{%" in node:
            yield node


def _declared(role: Path) -> set[str]:
    names: set[str] = set()
    for folder in ("defaults", "vars"):
        for path in role.glob(f"{folder}/*.yml"):
            names.update(yaml.safe_load(path.read_text()) or {})
    for path in [*role.glob("tasks/*.yml"), *role.glob("handlers/*.yml")]:
        for task in _tasks(path):
            names.update(str(v) for k, v in task.items() if k == "register")
            names.update((task.get("vars") or {}).keys())
            control = task.get("loop_control", {})
            names.update([control.get("loop_var", "item"), control.get("index_var", "item")])
    return names


def _tasks(path: Path) -> list[dict[str, Any]]:
    return [t for t in yaml.safe_load(path.read_text()) or [] if isinstance(t, dict)]


def _dependencies(role: Path) -> list[Path]:
    meta = yaml.safe_load((role / "meta" / "main.yml").read_text()) or {}
    return [role.parent / (d["role"] if isinstance(d, dict) else d) for d in meta["dependencies"]]


@pytest.mark.parametrize("role", sorted(p.name for p in (ANSIBLE_DIR / "roles").iterdir()))
def test_role_reads_only_its_declared_inputs(role: str) -> None:
    """A role stands alone: what it reads is declared in its defaults (or vars, or registered
    by its tasks, or declared by a role it depends on in meta/); never the inventory's groups
    or hostvars, nor a global setting."""
    root = ANSIBLE_DIR / "roles" / role
    known = _declared(root) | ANSIBLE_NAMES
    for dependency in _dependencies(root):
        known |= _declared(dependency)
    env = jinja2.Environment(extensions=["jinja2.ext.do"])
    env.filters, env.tests = _AnyName(), _AnyName()  # Ansible's filters and tests: all known
    texts = [
        text
        for folder in ("tasks", "handlers", "vars", "defaults")
        for path in root.glob(f"{folder}/*.yml")
        for text in _expressions(yaml.safe_load(path.read_text()))
    ]
    texts += [path.read_text() for path in root.glob("templates/*.j2")]
    read: set[str] = set()
    for text in texts:
        read |= jinja2.meta.find_undeclared_variables(env.parse(text))
    assert not read - known, f"{role} reads undeclared inputs: {sorted(read - known)}"


def _handler_names(role: Path) -> set[str]:
    return {h["name"] for path in role.glob("handlers/*.yml") for h in _tasks(path)}


def _notified(role: Path) -> set[str]:
    names: set[str] = set()
    for path in role.glob("tasks/*.yml"):
        for task in _tasks(path):
            notify = task.get("notify", [])
            names.update([notify] if isinstance(notify, str) else notify)
    return names


@pytest.mark.parametrize("role", sorted(p.name for p in (ANSIBLE_DIR / "roles").iterdir()))
def test_role_notifies_only_handlers_it_can_count_on(role: str) -> None:
    """A handler notified but not the role's own must be a declared dependency's: then it is
    loaded first and runs first (Ansible runs handlers in load order, not notify order), e.g.
    common's "Reload systemd units" before the role's restart of the unit it changed."""
    root = ANSIBLE_DIR / "roles" / role
    known = _handler_names(root)
    for dependency in _dependencies(root):
        known |= _handler_names(dependency)
    assert _notified(root) <= known, f"{role} notifies {sorted(_notified(root) - known)}"


def render(
    tmp_path: Path, templates: dict[Path, Path], variables: dict[str, Any], hosts: str = ""
) -> None:
    """Render templates (destination: template) with Ansible itself (its filters and
    ansible_managed), on this machine, as host s1 of the `hosts` (INI lines) of group
    signaling."""
    local = f"ansible_connection=local\nansible_python_interpreter={sys.executable}\n"
    inventory = tmp_path / "inventory.ini"
    inventory.write_text(f"[signaling]\n{hosts or 's1'}\n[all:vars]\n{local}")
    tasks = [
        {"ansible.builtin.template": {"src": str(src), "dest": str(dest)}}
        for dest, src in templates.items()
    ]
    play = {"hosts": "s1", "gather_facts": False, "vars": variables, "tasks": tasks}
    (tmp_path / "play.yml").write_text(yaml.safe_dump([play]))
    ansible("ansible-playbook", "-i", str(inventory), str(tmp_path / "play.yml"), tmp_path=tmp_path)


def test_route_tags_reach_the_instances_and_the_front(tmp_path: Path) -> None:
    """site.yml's route tags (10, 11, ... over the signaling group's ports) rendered for a
    2 + 1 instance inventory: each instance's tags and the front's use-server rules, and
    haproxy accepts the front's configuration."""
    require_binary("haproxy")
    plays = yaml.safe_load((ANSIBLE_DIR / "site.yml").read_text())
    signaling = next(p for p in plays if p["hosts"] == "signaling")["vars"]
    cert, key = self_signed(tmp_path, dns=("fileshare.test",))
    pem = tmp_path / "front.pem"
    pem.write_text(cert.read_text() + key.read_text())
    lb = yaml.safe_load((ANSIBLE_DIR / "roles" / "lb" / "defaults" / "main.yml").read_text())
    tags = tmp_path / "tags.j2"
    tags.write_text("{{ fileshare_route_tags | to_json }}")
    render(
        tmp_path,
        {
            tmp_path / "haproxy.cfg": ANSIBLE_DIR / "roles/lb/templates/haproxy.cfg.j2",
            tmp_path / "tags.json": tags,
        },
        {
            **lb,
            "fileshare_route_tags": signaling["fileshare_route_tags"],
            "lb_route_tags": "{{ fileshare_route_tags }}",
            "lb_backends": [["s1", "10.0.0.1", [8001, 8002]], ["s2", "10.0.0.2", [8001]]],
            "lb_certificate_path": str(pem),
            "lb_port": free_port(),
        },
        's1 fileshare_signaling_ports="[8001, 8002]"\ns2 fileshare_signaling_ports="[8001]"',
    )
    assert json.loads((tmp_path / "tags.json").read_text()) == {"s1": ["10", "11"], "s2": ["12"]}
    config = (tmp_path / "haproxy.cfg").read_text()
    routes = [line.strip() for line in config.splitlines() if "use-server" in line]
    assert routes == [
        f"use-server {server} if {{ path /ws }} {{ urlp(s) -m beg {tag} }}"
        for server, tag in (("s1-8001", "10"), ("s1-8002", "11"), ("s2-8001", "12"))
    ]
    checked = subprocess.run(
        [find_program("haproxy"), "-c", "-f", str(tmp_path / "haproxy.cfg")],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def served_certificate(port: int) -> bytes:
    """The certificate a TLS listener on 127.0.0.1:`port` presents (DER)."""
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return der


def test_coturn_renewal_hook_has_coturn_serve_the_new_certificate(tmp_path: Path) -> None:
    """The coturn role's hook, rendered by Ansible, against a real coturn (Debian's 4.6.1) on
    loopback: the renewed files alone change nothing; the hook puts them in place and reloads
    (here SIGUSR2 by PID, what the role's ExecReload sends), and new TLS connections get the
    new certificate from the same process. Wrong arguments change nothing."""
    require_binary("turnserver")
    live, renewed = tmp_path / "live", tmp_path / "renewed"
    live.mkdir()
    renewed.mkdir()
    cert, key = self_signed(live, dns=(TLS_NAME,))
    new_cert, new_key = self_signed(renewed, dns=(TLS_NAME,))
    old, new = (ssl.PEM_cert_to_DER_cert(p.read_text()) for p in (cert, new_cert))
    port, tls_port, relay_port = (free_udp_tcp_port() for _ in range(3))
    local = turn_settings(
        listening_ips=("127.0.0.1",),
        relay_ips=("127.0.0.1",),
        port=port,
        tls_port=tls_port,
        min_port=relay_port,
        max_port=relay_port,
        test_allow=(),
        cert=cert,
        pkey=key,
        server_name=TLS_NAME,
    )
    hook = tmp_path / "hook"
    with running_turn(local, tmp_path / "run") as endpoint:
        pid = endpoint.pid
        coturn = yaml.safe_load((ANSIBLE_DIR / "roles/coturn/defaults/main.yml").read_text())
        render(
            tmp_path,
            {hook: ANSIBLE_DIR / "roles/coturn/templates/certificate-hook.j2"},
            {
                **coturn,
                "coturn_config_dir": str(live),
                "coturn_certificate_hook": str(hook),
                "coturn_reload_command": f"kill -USR2 {pid}",
            },
        )
        hook.chmod(0o755)
        assert served_certificate(tls_port) == old
        wrong = subprocess.run([hook, str(new_cert)], capture_output=True, timeout=30)
        assert wrong.returncode == 2 and cert.read_text() != new_cert.read_text()
        done = subprocess.run(
            [hook, str(new_cert), str(new_key)], capture_output=True, text=True, timeout=30
        )
        assert done.returncode == 0, done.stderr
        assert cert.read_bytes() == new_cert.read_bytes()
        assert key.read_bytes() == new_key.read_bytes()
        deadline = time.monotonic() + 10
        while served_certificate(tls_port) != new:
            assert time.monotonic() < deadline, "coturn still serves the old certificate"
            time.sleep(0.1)
        assert endpoint.pid == pid and Path(f"/proc/{pid}").exists()


def test_no_play_gathers_facts() -> None:
    """The roles read only their declared inputs (above), never a fact: gathering them would
    cost seconds per host and play, in every deploy and in the deploy test's eight runs."""
    plays = yaml.safe_load((ANSIBLE_DIR / "site.yml").read_text())
    assert [play["name"] for play in plays if play.get("gather_facts") is not False] == []
