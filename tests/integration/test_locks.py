"""Leases on a real PostgreSQL: one holder per duty; a holder whose session ends (here
terminated by the server, as a failover or an admin would) says so at its next check,
after which the standby holds the duty and the old holder does not act."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, text

from muto.projections.locks import DUTIES, HOLDER_KEEPALIVE, Lease, Lock
from tests.support.waits import eventually

pytestmark = pytest.mark.postgres


def test_one_holder_per_duty_and_a_lost_session_stops_the_holder(postgres_url: str) -> None:
    one, two = create_engine(postgres_url), create_engine(postgres_url)
    leases = {duty: (Lease(one, duty), Lease(two, duty)) for duty in DUTIES}
    try:
        for a, b in leases.values():
            assert a.held() and not b.held()
            assert a.held() and not b.held()  # held again, not taken twice
        active, standby = leases[Lock.CONTROLLER]
        with two.connect() as admin:
            pid = admin.execute(
                text(
                    "SELECT pid FROM pg_locks JOIN pg_database d ON d.oid = database "
                    "WHERE d.datname = current_database() AND locktype = 'advisory' "
                    "AND objid = :k AND granted"
                ),
                {"k": int(Lock.CONTROLLER)},
            ).scalar_one()
            admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            admin.commit()

            def gone() -> bool:  # terminating only signals the backend; it exits after
                alive = text("SELECT count(*) FROM pg_stat_activity WHERE pid = :pid")
                found = admin.execute(alive, {"pid": pid}).scalar_one() == 0
                admin.commit()
                return found

            eventually(gone, f"backend {pid} to exit", interval=0.05)
        assert standby.held()  # the lock went with the session
        assert not active.held()  # and the old holder knows it at its next check
        assert not active.holding
        for duty, (a, b) in leases.items():  # the other duties were not disturbed
            if duty is not Lock.CONTROLLER:
                assert a.held() and not b.held()
        standby.release()
        assert active.held()  # released: the other one takes it
    finally:
        for a, b in leases.values():  # a lease's connection is never back in the pool
            a.release()
            b.release()
        one.dispose()
        two.dispose()


def test_a_holder_asks_the_server_to_probe_its_session(postgres_url: str) -> None:
    """A holder whose host dies must not keep its duty for hours: its session asks the
    server for keepalive probes and a send timeout (the standby can only take over once
    the server has ended the session)."""
    engine = create_engine(postgres_url)
    lease = Lease(engine, Lock.NOTIFIER)
    try:
        assert lease.held()
        session = lease._connection  # the holding session itself
        shown = {
            name: session.execute(text(f"SHOW {name}")).scalar_one() for name in HOLDER_KEEPALIVE
        }
        assert shown == HOLDER_KEEPALIVE, "the suite connects over TCP, where they apply"
    finally:
        lease.release()
        engine.dispose()


def test_a_holders_check_is_one_statement_outside_any_transaction(postgres_url: str) -> None:
    """The following projector checks its lease ten times a second: the check must not
    leave the holding session in a transaction (which would hold back VACUUM for as long
    as the process lives), and it still finds a session that is gone."""
    engine, admin = create_engine(postgres_url), create_engine(postgres_url)
    lease = Lease(engine, Lock.PROJECTOR)
    try:
        assert lease.held() and lease.held()
        pid = lease._driver.info.backend_pid
        with admin.connect() as c:
            state = text("SELECT state FROM pg_stat_activity WHERE pid = :pid")
            assert c.execute(state, {"pid": pid}).scalar_one() == "idle"
    finally:
        lease.release()
        engine.dispose()
        admin.dispose()


def test_sqlite_has_one_process_and_every_lease_is_held() -> None:
    engine = create_engine("sqlite://")
    assert all(Lease(engine, duty).held() for duty in DUTIES)
