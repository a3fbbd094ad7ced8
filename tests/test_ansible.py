"""The Ansible tree without deploying it (the deploy itself is tests/test_deploy.py): the example
production inventory with its example vault, the playbook's syntax, and the one coturn template."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

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
