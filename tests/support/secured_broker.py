"""The shipped broker config (deploy/mosquitto) on a private Mosquitto: its paths and
port moved to a temporary directory, the password file made by the docs/mqtt.md snippet
(deploy/mosquitto/add-users.sh), the per-vehicle ACL as shipped."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import aiomqtt

from tests.conftest import Mosquitto, unavailable

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy" / "mosquitto"
DOCS = ROOT / "docs" / "mqtt.md"
USERS = {"muto-cloud": "cloud secret", "v1": "v1-secret", "v2": "v2-secret"}


def secured_broker(workdir: Path, users: dict[str, str] | None = None) -> Mosquitto:
    """Mosquitto with the shipped config on a free port in `workdir`. Its users: `users`
    (user -> password) made by add-users.sh, or by default USERS, made by running the
    snippet of docs/mqtt.md as written (so the docs are tested too)."""
    if shutil.which("mosquitto_passwd") is None:
        unavailable("mosquitto_passwd not found")
    workdir.mkdir(parents=True, exist_ok=True)
    broker = Mosquitto(workdir)
    if users is not None:
        lines = "".join(f"{user} {password}\n" for user, password in users.items())
        add_users = [str(DEPLOY / "add-users.sh"), str(workdir / "passwd")]
        subprocess.run(["sh", *add_users], input=lines.encode(), check=True)
        apply_shipped_config(broker, workdir)
        return broker
    passwords = {
        "CLOUD_PASSWORD": USERS["muto-cloud"],
        "V1_PASSWORD": USERS["v1"],
        "V2_PASSWORD": USERS["v2"],
        "PASSWORD_FILE": str(workdir / "passwd"),
    }
    # The snippet of docs/mqtt.md, run as written from the repository root.
    snippet = re.search(r"### Creating users.*?```sh\n(.*?)```", DOCS.read_text(), re.S)
    assert snippet is not None
    env = {"PATH": os.environ["PATH"], **passwords}
    subprocess.run(["sh", "-c", snippet.group(1)], cwd=ROOT, env=env, check=True)
    apply_shipped_config(broker, workdir)
    return broker


def client(broker: Mosquitto, user: str | None, password: str | None = None) -> aiomqtt.Client:
    return aiomqtt.Client(
        "127.0.0.1", broker.port, username=user, password=password or USERS.get(user or "")
    )


def apply_shipped_config(broker: Mosquitto, workdir: Path) -> None:
    """deploy/mosquitto's config and ACL for `broker`, as shipped but for its paths and
    port (the password file `workdir/passwd` made by the caller)."""
    shutil.copy(DEPLOY / "acl", workdir / "acl")
    paths = {
        "listener": f"{broker.port} 127.0.0.1",
        "password_file": str(workdir / "passwd"),
        "acl_file": str(workdir / "acl"),
        "persistence_location": f"{workdir}/",
    }
    config = (DEPLOY / "mosquitto.conf").read_text()
    for option, value in paths.items():
        config, found = re.subn(rf"^{option} .*$", f"{option} {value}", config, flags=re.M)
        assert found == 1, option
    if os.geteuid() == 0:
        # As root, Mosquitto drops to the `mosquitto` user, which cannot read pytest's
        # private temporary directory; stay root in the test only.
        config += "user root\n"
    broker.config.write_text(config)
