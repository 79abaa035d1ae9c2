"""`muto sim fleet` stops when asked even while it provisions: a benchmark stopped during
a 10,000-vehicle start-up must not leave slices behind, retrying a cloud that is gone."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from muto.domain.wire import encode
from muto.trust import KeySet, Signer, TrustConfig

CAP_S = 60.0  # a bound on each wait; provisioning alone would retry for minutes


def test_a_slice_stops_while_provisioning(tmp_path: Path) -> None:
    key = Signer.generate().public_pem
    trust = tmp_path / "trust.json"
    trust.write_bytes(encode(TrustConfig(release_keys=KeySet(keys=[key]),
                                         control_plane_keys=KeySet(keys=[key]))))  # fmt: skip
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts, never answers
        port = silent.getsockname()[1]
        slice_ = subprocess.Popen(
            [
                *(sys.executable, "-m", "muto.cli", "sim", "fleet"),
                *("--cloud-url", f"http://127.0.0.1:{port}", "--operator-token", "t"),
                *("--trust", str(trust), "--vehicles", "3", "--slice", "0/1"),
            ],
        )
        try:
            silent.settimeout(CAP_S)
            held, _ = silent.accept()  # the slice is provisioning
            with held:
                slice_.send_signal(signal.SIGTERM)
                started = time.monotonic()
                code = slice_.wait(timeout=CAP_S)
        finally:
            slice_.kill()
            slice_.wait()
    assert code == 0
    assert time.monotonic() - started < CAP_S
