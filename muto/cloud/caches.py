"""The in-process caches that answer requests, and what keeps each of them exact.

- the token cache (tokens.Authenticator): a revocation evicts its token;
- the ETag memory (etags.DesiredEtags): a new assignment evicts its vehicle's ETag;
- the health-status memory of report ingest (ingest.Ingest): a health transition
  evicts its vehicle;
- the release envelopes (envelopes.ReleaseEnvelopes): exact by their key, the release
  and its count of added signatures, which a poll reads with its ETag; signatures
  added to a release evict it, and empty the ETag memory (every bundle of that release
  has a new ETag: projections.desired.bundle_etag);
- the published release key rotations (rotations.KeyRotations): a publication evicts
  them, and empties the ETag memory (every bundle carries them: its ETag says the key
  set version, projections.desired.rotated_etag).

Each eviction comes from the projection that committed the change (its Announcer, after
the commit; the ETag memory also holds a vehicle from just before that commit, see
etags.py). On PostgreSQL other processes write too: `listen()` starts the change
channel (invalidation.ViewChanges), and a cache answers from memory only while that
channel is live; each time it (re)connects every cache starts again, since what
changed while it was away is unknown. On SQLite one process writes: its own
announcers are enough.
"""

from __future__ import annotations

from muto.cloud.envelopes import ReleaseEnvelopes
from muto.cloud.etags import DesiredEtags
from muto.cloud.ingest import Ingest
from muto.cloud.invalidation import ViewChanges
from muto.cloud.queries import Queries
from muto.cloud.rotations import KeyRotations
from muto.cloud.settings import Settings
from muto.cloud.tokens import Authenticator
from muto.projections import Views


class Caches:
    def __init__(
        self,
        settings: Settings,
        views: Views,
        queries: Queries,
        auth: Authenticator,
        ingest: Ingest,
    ) -> None:
        self.settings = settings
        self.views = views
        self.auth = auth
        self.ingest = ingest
        self.etags = DesiredEtags(self.live)
        self.releases = ReleaseEnvelopes(queries.release_envelope)
        self.rotations = KeyRotations(queries.key_rotation_chain, self.live)
        self.changes: ViewChanges | None = None
        auth.trusted = ingest.trusted = self.live
        views.tokens.revoked.append(auth.forget)
        views.desired.assigned.append(self.etags.forget)
        views.desired.assigned.holders.append(self.etags.changing)
        views.inventory.health_changed.append(ingest.forget)
        views.releases.signed.append(self.releases.forget)
        views.releases.signed.append(self._release_signed)
        views.releases.rotated.append(self.rotations.forget)  # before the ETags: see etags.py
        views.releases.rotated.append(self._keys_rotated)

    def _release_signed(self, _: str) -> None:
        """Each vehicle assigned the release has a new bundle ETag. Which vehicles those
        are is the view's to say; an addition is a rare operator act, so every vehicle's
        next poll goes to the view once, as after a restart."""
        self.etags.clear()

    def _keys_rotated(self, _: str) -> None:
        """Every bundle now carries one more rotation, so has a new ETag: every vehicle's
        next poll goes to the view once and gets it in full."""
        self.etags.clear()

    def live(self) -> bool:
        """Whether this process hears every change that could make a cache wrong now."""
        if not self.settings.is_postgres:
            return True  # one process: its own projector announces every change
        return self.changes is not None and self.changes.live

    def listen(self) -> None:
        """Serving processes on PostgreSQL: hear the other processes' changes."""
        if self.settings.is_postgres and self.changes is None:
            self.changes = ViewChanges(self.settings.views_url, self.views, self.forget_all)
            self.changes.start()

    def forget_all(self) -> None:
        self.rotations.forget()  # first: an ETag read after the clear sees the view's chain
        self.etags.clear()
        self.auth.clear()
        self.ingest.forget()

    def stop(self) -> None:
        if self.changes is not None:
            self.changes.stop()
