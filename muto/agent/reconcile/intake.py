"""Intake: fetch the latest desired state, verify it, accept it, journal the verdict.

Invariants: nothing unverified reaches the journal's desired state; the trust store
accepts a document before anything acts on it; a rejection leaves the accepted desired
state (and so the running release) untouched; the conditional fetch's ETag is only that
of a document the agent accepted (or held), so a rejected one is fetched in full and judged
again at every poll (a clock set right, signatures added, a proxy that stops tampering),
yet journaled and reported once while its verdict stays the same; after the cloud
answered a fetch with Retry-After, nothing is asked of it until that time (`not_before`;
the agent's loop fetches again then: agent.py).

Without trusted time a document is still fetched and authenticated, but never accepted:
its expiry cannot be judged. An authentic one is journaled as held (DesiredHeld) and
reported `blocked` UNTRUSTED_CLOCK once, so the cloud sees the gate instead of silence
(a rollout defers the vehicle). Its ETag is not the journal's: with a trusted clock the
fetch asks with the accepted document's ETag, gets the held one back and verifies it.

The release keys are followed first (rotation.follow_chain): every KeyRotation the
bundle carries that is newer than the trust store's key set is verified against the keys
in force and persisted, in order, before the release is verified (ReleaseKeysRotated).
One that does not verify is passed over (a later one the keys in force signed still
applies) and said once (ReleaseKeysRotationRefused, a warning), but does not reject the
bundle: the chain only grows, so a bad rotation would otherwise cost the vehicle every
later document, a rollback or "run nothing" included. The release is then verified
against the keys in force, as ever.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from muto.agent.clock import Clock
from muto.agent.journal import Journal
from muto.agent.journal.events import (
    ConfigApplied,
    DesiredHeld,
    DesiredReceived,
    DesiredRejected,
    DesiredVerified,
    Event,
    ReleaseKeysRotated,
    ReleaseKeysRotationRefused,
)
from muto.agent.kill import KillSwitch
from muto.agent.signals import Signals
from muto.agent.transport.http import Fetched, NotFetched, RetryLater
from muto.agent.trust import Trust
from muto.domain.desired import DesiredStateBundle, DesiredStateDocument
from muto.domain.errors import ReasonError
from muto.domain.messages import AgentPhase
from muto.domain.reasons import ReasonCode
from muto.domain.wire import encode
from muto.trust import AuthenticDocumentRejected, verify_bundle
from muto.trust.rotation import Refused, follow_chain

logger = logging.getLogger("muto.agent")


class DesiredSource(Protocol):
    async def latest(self, etag: str | None) -> Fetched | NotFetched: ...


@dataclass
class Intake:
    vehicle_id: str
    source: DesiredSource | None  # None: offline by design (the cached state only)
    trust: Trust
    journal: Journal
    clock: Clock
    kill: KillSwitch = field(default_factory=KillSwitch)
    signals: Signals = field(default_factory=Signals)
    not_before: float = 0.0  # monotonic: the cloud's Retry-After for fetches ends then
    # The refused rotation said last (the rotation, at which key set version, why): said
    # once, not at every poll; after a restart once more. One, not a set: a walk names
    # one (its newest not passed), and a path that forges a new one each poll cannot
    # grow it.
    refusal_said: tuple[bytes, int, str] | None = None

    async def run(self, clock_trusted: bool) -> NotFetched | None:
        """Returns why nothing new was taken in, or None when a document was journaled."""
        if self.source is None:
            return NotFetched("unreachable", "no cloud configured")
        wait = self.not_before - self.clock.monotonic()
        if wait > 0:
            return NotFetched(
                "unreachable", RetryLater(f"the cloud said to wait {wait:.1f} s", wait)
            )
        self.signals.set_phase(AgentPhase.FETCHING)
        self.kill("fetch")
        state = self.journal.state
        # Untrusted: the held document is old news. Trusted: ask with the accepted
        # document's ETag, so a held one comes back (not a 304) and is verified now.
        held = state.held
        etag = held.etag if held is not None and not clock_trusted else state.etag
        got = await self.source.latest(etag)
        if isinstance(got, NotFetched):
            if isinstance(got.detail, RetryLater):
                self.not_before = self.clock.monotonic() + got.detail.after_s
            return got
        self.signals.set_phase(AgentPhase.VERIFYING)
        self.kill("verify")
        events = self._verdict(got, clock_trusted)
        if not events:
            return NotFetched("not_modified", "a document judged before, the same verdict")
        self.journal.append(*events)
        self.kill("verify:done")
        if any(isinstance(event, ConfigApplied) for event in events):
            self.signals.config_changed()  # journaled first: the journal is the truth
        return None

    async def offered(self) -> int | None:
        """The sequence the cloud offers now (its response's claim, unverified), asked
        with the accepted document's ETag: None when nothing changed, the cloud is out of
        reach, or it said when to ask again (kept for the pass's own fetches too)."""
        if self.source is None or self.clock.monotonic() < self.not_before:
            return None
        try:
            got = await self.source.latest(self.journal.state.etag)
        except Exception:  # the pass's own fetches say what is wrong with the cloud
            logger.debug("a look at the latest desired state failed", exc_info=True)
            return None
        if isinstance(got, NotFetched):
            if isinstance(got.detail, RetryLater):
                after = self.clock.monotonic() + got.detail.after_s
                self.not_before = max(self.not_before, after)
            return None
        return got.sequence

    def _verdict(self, got: Fetched, clock_trusted: bool) -> list[Event]:
        rotated: list[Event] = []  # journaled whatever the verdict: the keys did change
        judged = self._judged(got, clock_trusted, rotated)
        return [*rotated, *judged]

    def _judged(self, got: Fetched, clock_trusted: bool, rotated: list[Event]) -> list[Event]:
        now, state = self.clock.now(), self.journal.state
        received = DesiredReceived(
            at=now, revision=got.revision, sequence=got.sequence, etag=got.etag
        )
        try:
            if got.bundle is None:
                raise ReasonError(ReasonCode.VERIFY_SIGNATURE_FAILED, got.problem or "")
            self._follow_rotations(got.bundle, now, rotated)
            trust = self.trust
            verified = verify_bundle(
                got.bundle,
                trust.config,
                trust.trusted,
                self.vehicle_id,
                now,
                clock_trusted=clock_trusted,
            )
            try:
                trust.accept(verified)  # before anything acts on it (docs/trust.md)
            except ReasonError as exc:  # the file advanced since: stale now
                raise AuthenticDocumentRejected(
                    exc, verified.document, verified.document_digest
                ) from exc
        except AuthenticDocumentRejected as exc:
            if exc.code == ReasonCode.UNTRUSTED_CLOCK:
                return self._held(got, received, exc)
            return self._rejected(got, received, exc)
        except ReasonError as exc:
            return self._rejected(got, received, exc)
        if state.desired is not None and state.desired.document_digest == verified.document_digest:
            return [received]  # the same document again (a new ETag)
        document = verified.document
        events: list[Event] = [
            received,
            DesiredVerified(
                at=now,
                revision=document.revision,
                sequence=document.sequence,
                document=document,
                release=verified.release,
                document_digest=verified.document_digest,
                release_digest=verified.release_digest,
            ),
        ]
        if document.agent_config != state.config:
            events.append(
                ConfigApplied(at=now, revision=document.revision, config=document.agent_config)
            )
        return events

    def _follow_rotations(
        self, bundle: DesiredStateBundle, now: datetime, rotated: list[Event]
    ) -> None:
        """Apply the bundle's key rotations that follow_chain walks to, oldest first (a
        vehicle any number of rotations behind walks the chain; one provisioned with a
        later key set fast-forwards to its version); appends a ReleaseKeysRotated per
        rotation. Applied even when the rest of the bundle is then rejected: a rotation
        is trust metadata of its own, signed by the keys this vehicle already trusts (and
        by the new ones), not part of the document. A rotation the walk passed over is
        said (`_refusal`) and otherwise ignored: the keys in force stay, and judge the
        release."""
        walked = follow_chain(self.trust.config, bundle.key_rotations or ())
        for envelope in walked.applied:
            # Verified again, and persisted, by the store: the same rule on its own config.
            config = self.trust.rotate_release_keys(envelope)
            keys = config.release_keys
            rotated.append(
                ReleaseKeysRotated(
                    at=now,
                    version=config.release_keys_version,
                    key_ids=sorted(keys.trusted()),
                    threshold=keys.threshold,
                )
            )
            logger.warning(
                "%s: release keys rotated to version %d: %d of %s",
                self.vehicle_id,
                config.release_keys_version,
                keys.threshold,
                ", ".join(sorted(keys.trusted())),
            )
        if walked.refused is not None:
            rotated.extend(self._refusal(walked.refused, now))

    def _refusal(self, refused: Refused, now: datetime) -> list[Event]:
        """A rotation this vehicle cannot follow, said once: a warning and a journal
        event for people (the fold ignores it). Not a rejection of the bundle."""
        config = self.trust.config
        error, version = refused.error, refused.version
        said = (encode(refused.envelope), config.release_keys_version, str(error))
        if self.refusal_said == said:
            return []
        self.refusal_said = said
        logger.warning(
            "%s: release key rotation to version %s refused: %s: %s; the release keys in "
            "force stay (version %d), and judge the desired state",
            self.vehicle_id,
            "?" if version is None else version,
            error.code,
            error.detail,
            config.release_keys_version,
        )
        return [
            ReleaseKeysRotationRefused(
                at=now,
                version=version,
                code=error.code,
                detail=error.detail,
                in_force=config.release_keys_version,
            )
        ]

    def _rejected(self, got: Fetched, received: DesiredReceived, exc: ReasonError) -> list[Event]:
        """A rejection, journaled (and so reported) once: the same response (its ETag)
        served again at every poll is fetched in full (the fold keeps no rejected
        document's ETag) and judged again, and journaled only when its verdict changed or
        another response came between (a second incident is news)."""
        if self.journal.state.rejected == (got.etag, str(exc.code)):
            return []
        authentic = exc.document if isinstance(exc, AuthenticDocumentRejected) else None
        revision, sequence = self._under(got, authentic)
        # Once per distinct response, as journaled: a rejection leaves the pass's verdict
        # (the running release's) unchanged, so the agent's own line would say nothing.
        claimed = f"none; the response claims {got.revision}" if got.revision else "none"
        logger.warning(
            "%s: desired state rejected (revision %s): %s: %s",
            self.vehicle_id,
            revision or claimed,
            exc.code,
            exc.detail,
        )
        return [
            received,
            DesiredRejected(
                at=received.at,
                revision=revision,
                sequence=sequence,
                code=exc.code,
                detail=exc.detail,
            ),
        ]

    def _under(
        self, got: Fetched, authentic: DesiredStateDocument | None
    ) -> tuple[str | None, int | None]:
        """The revision and sequence a rejection is reported under: only one the rejection
        is news about, so that a bundle that reuses or forges the accepted revision cannot
        make its verdict (and a rollout counting it) say `rejected` while it runs fine.
        An authentic document (its own signature holds) for this vehicle: its own, unless
        it is the accepted document itself (then what was wrong is the rest of the
        bundle, e.g. a release signed by another key). Otherwise the response's claim,
        which anyone on the path can write, only when it claims news (a sequence above
        the accepted one, another revision). Else none."""
        desired = self.journal.state.desired
        if authentic is not None:
            accepted_itself = desired is not None and authentic.revision == desired.revision
            if authentic.vehicle_id != self.vehicle_id or accepted_itself:
                return None, None
            return authentic.revision, authentic.sequence
        accepted = self.journal.state.accepted_sequence
        news = got.sequence is not None and got.sequence > accepted
        if got.revision is None or not news:
            return None, None
        if desired is not None and got.revision == desired.revision:
            return None, None
        return got.revision, got.sequence

    def _held(
        self, got: Fetched, received: DesiredReceived, exc: AuthenticDocumentRejected
    ) -> list[Event]:
        """`verify_bundle` judges the clock after signatures, the release binding, the
        vehicle and freshness (tests/unit/test_agent_held_desired.py holds it to that):
        this document is authentic, only its expiry is unknown. Not accepted: the trust
        store's floor must not rise on a document that may have expired."""
        state = self.journal.state
        document, digest = exc.document, exc.document_digest
        if state.desired is not None and state.desired.document_digest == digest:
            return [received]  # the accepted document again (a new ETag): nothing to hold
        held = state.held
        if held is not None and (held.document_digest, held.etag) == (digest, got.etag):
            return []  # a cloud that ignored If-None-Match: not news
        return [
            DesiredHeld(
                at=received.at,
                revision=document.revision,
                sequence=document.sequence,
                document_digest=digest,
                etag=got.etag,
                code=exc.code,
                detail=exc.detail,
            )
        ]
