"""The environment the python_wheel runtime's venv and pip run with: the agent's, less
whatever could redirect an install, plus the runtime's mark."""

from __future__ import annotations

import os

from muto.agent.runtime.components import installer_env
from muto.agent.runtime.group_ledger import MARK_ENV

AGENT_ENV = {
    "PATH": "/usr/bin:/bin",
    "HOME": "/home/muto",
    "TMPDIR": "/var/tmp",
    "LANG": "C.UTF-8",
    "LD_LIBRARY_PATH": "/opt/ros/lib",
    "https_proxy": "http://proxy:3128",
    "PIP_TARGET": "/elsewhere",
    "PIP_INDEX_URL": "https://index.example/simple",
    "PIP_FIND_LINKS": "/elsewhere/wheels",
    "PIP_CONFIG_FILE": "/etc/pip-of-the-site.conf",
    "pip_prefix": "/elsewhere",
    "PYTHONPATH": "/elsewhere/lib",
    "PYTHONHOME": "/elsewhere",
    "PYTHONUSERBASE": "/elsewhere/user",
    "_PYTHON_SYSCONFIGDATA_NAME": "_sysconfigdata_elsewhere",
    "VIRTUAL_ENV": "/home/muto/another-venv",
}


def test_nothing_that_redirects_an_install_reaches_pip() -> None:
    env = installer_env(AGENT_ENV, {MARK_ENV: "abc", "MUTO_RELEASE": "lucid@1.0.0"})
    assert env == {
        "PATH": "/usr/bin:/bin",
        "HOME": "/home/muto",
        "TMPDIR": "/var/tmp",
        "LANG": "C.UTF-8",
        "LD_LIBRARY_PATH": "/opt/ros/lib",
        "https_proxy": "http://proxy:3128",
        MARK_ENV: "abc",
        "MUTO_RELEASE": "lucid@1.0.0",
        "PIP_CONFIG_FILE": os.devnull,  # pip then reads no configuration file at all
        "PYTHONNOUSERSITE": "1",
    }
