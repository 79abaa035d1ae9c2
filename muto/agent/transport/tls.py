"""The agent's one client TLS context, whose trust anchors load on the first handshake.

httpx builds a context per client and reads the whole CA bundle into it on the spot
(~2 MB of parsed certificates; again for each artifact download's client). The agent
shares one context between its HTTP clients instead, and loads the bundle when a TLS
connection first needs it: an agent whose cloud and artifacts are plain HTTP (a depot
network) never holds it. Verification is as strict as httpx's default: certifi's
bundle, or SSL_CERT_FILE / SSL_CERT_DIR when set; hostname checked; certificate required.
"""

from __future__ import annotations

import functools
import os
import ssl
from typing import Any


class OnDemandTrust(ssl.SSLContext):
    _anchors_loaded = False

    def _load_anchors(self) -> None:
        if self._anchors_loaded:
            return
        if os.environ.get("SSL_CERT_FILE"):
            self.load_verify_locations(cafile=os.environ["SSL_CERT_FILE"])
        elif os.environ.get("SSL_CERT_DIR"):
            self.load_verify_locations(capath=os.environ["SSL_CERT_DIR"])
        else:
            import certifi

            self.load_verify_locations(cafile=certifi.where())
        self._anchors_loaded = True

    def wrap_bio(self, *args: Any, **kwargs: Any) -> ssl.SSLObject:  # asyncio and anyio
        self._load_anchors()
        return super().wrap_bio(*args, **kwargs)

    def wrap_socket(self, *args: Any, **kwargs: Any) -> ssl.SSLSocket:  # blocking clients
        self._load_anchors()
        return super().wrap_socket(*args, **kwargs)


@functools.cache
def client_tls() -> ssl.SSLContext:
    """The process's context (PROTOCOL_TLS_CLIENT: CERT_REQUIRED, check_hostname)."""
    return OnDemandTrust(ssl.PROTOCOL_TLS_CLIENT)
