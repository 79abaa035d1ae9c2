"""The figures, each with its baseline from the same run."""

from __future__ import annotations

from bench import Result
from bench.agent.common import (
    EVENTS,
    FLEET_WINDOW_S,
    HEALTH_PER_ROLLOUT,
    IDLE_S,
    PAYLOAD_MB,
    PLAN_CALLS,
    PLAN_REPEAT,
)
from bench.agent.real import ApplyFigures, IdleFigures
from bench.agent.replay import ReplayFigures


def memory_results(applied: ApplyFigures, idle: IdleFigures) -> list[Result]:
    base = idle.baselines_kb
    mb = 1024
    return [
        Result(
            "Agent RSS at idle",
            idle.agent_kb / mb,
            "MiB",
            f"`muto agent run --runtime process --poll-s 30 --mqtt-url URL --reports-via "
            f"mqtt` (as deploy/systemd starts it), restarted, converged, its stack running; "
            f"after {IDLE_S:.0f} s idle ({idle.agent_kb_start / mb:.1f} MiB at the start of "
            f"that window); {idle.threads} threads",
            "process with `muto agent run`'s imports, running nothing",
            base["cli"] / mb,
        ),
        Result(
            "Agent peak RSS during apply",
            applied.peak_kb / mb,
            "MiB",
            f"VmHWM while applying a {PAYLOAD_MB} MB tar.gz (download, verify, extract, start, "
            f"readiness probe): {applied.seconds:.1f} s from assignment to converged report, "
            f"apply {applied.apply_sec or 0:.2f} s, readiness {applied.readiness_sec or 0:.2f} s",
            "the same process at idle just before",
            applied.before_kb / mb,
        ),
        Result(
            "Agent RSS at idle after an apply, before a restart",
            applied.after_kb / mb,
            "MiB",
            "the process of the apply above, 5 s after it converged and reported: it has "
            "checked signatures, so it holds cryptography (its own OpenSSL) until it restarts",
            "idle after a restart (first row)",
            idle.agent_kb / mb,
        ),
        Result(
            "Imports of `muto agent run`",
            base["cli"] / mb,
            "MiB",
            "a process that imports what `muto agent run --runtime process --mqtt-url URL` "
            "has imported before it runs (its subcommand's parser, `muto.agent.compose`, the "
            "process runtime, the MQTT link; httpx's CLI and trio refused), then sleeps",
            "bare interpreter (`python -c` sleeping)",
            base["bare"] / mb,
        ),
        Result(
            "Imports of the whole `muto` CLI",
            base["all"] / mb,
            "MiB",
            "every subcommand's parser and module (the cloud's, the simulator's, the "
            "audit's: what `muto agent run` loaded until 2026-12) and `muto.agent.compose`",
            "the imports of `muto agent run` (above)",
            base["cli"] / mb,
        ),
    ]


def cpu_result(idle: IdleFigures) -> Result:
    per_minute = 60_000  # ms of CPU per minute at 100 % of one core
    return Result(
        "Agent CPU at idle, 30 s poll",
        idle.agent_cpu * per_minute,
        "ms CPU/min",
        f"= {idle.agent_cpu * 100:.4f} % of a core; {IDLE_S:.0f} s window, converged, stack "
        f"running: ~{IDLE_S / 30:.0f} polls answered 304, drift and health checks every 5 s; "
        f"stat ticks say {idle.agent_ticks * per_minute:.0f} ms/min",
        "asyncio loop sleeping, waking every 5 s",
        idle.timers_cpu * per_minute,
    )


def replay_results(r: ReplayFigures) -> list[Result]:
    journal = (
        f"{EVENTS:,} events ({r.db_mb:.0f} MB of SQLite, written in {r.build_s:.0f} s): a "
        f"rollout (11 events) then {HEALTH_PER_ROLLOUT} periodic health reports, each "
        "queued and delivered, over and over"
    )
    return [
        Result(
            f"Journal replay from zero, {EVENTS:,} events",
            r.full_s,
            "s",
            f"{journal}; read and decode alone take {r.decode_s:.2f} s (median of 3)",
            "the same rows read with sqlite3 (median of 3)",
            r.raw_s,
        ),
        Result(
            "Journal open at start-up, after a crash",
            r.crashed_s * 1000,
            "ms",
            f"newest snapshot + {r.replayed} records after it (median of 5)",
            "replay from zero",
            r.full_s * 1000,
        ),
        Result(
            "Journal open at start-up, after a clean stop",
            r.clean_s * 1000,
            "ms",
            "the snapshot written at the end, no record to replay (median of 5)",
            "replay from zero",
            r.full_s * 1000,
        ),
    ]


def plan_results(converged_us: float, apply_us: float, trivial_us: float) -> list[Result]:
    common = f"median of {PLAN_REPEAT} batches of {PLAN_CALLS:,} calls"
    return [
        Result(
            "plan(), converged vehicle (every poll)",
            converged_us,
            "µs",
            f"desired release runs and was reported: empty plan, verdict converged; {common}",
            "a trivial function of the same 3 arguments",
            trivial_us,
        ),
        Result(
            "plan(), apply decision",
            apply_us,
            "µs",
            "a new release verified: compatibility, expiry, apply window (Europe/Berlin), "
            f"stationary and battery gates, cache check → NoteGates + Apply; {common}",
            "a trivial function of the same 3 arguments",
            trivial_us,
        ),
    ]


def fleet_results(f: dict[str, float], timers: dict[str, float], idle: IdleFigures) -> list[Result]:
    n = int(f["agents"])
    started = (
        f"all {n:,} converged and reported {f['startup_s']:.0f} s after the first start, "
        f"{f['startup_cpu_s']:.0f} s of CPU ({f['startup_cpu_s'] / n * 1000:.1f} ms per agent)"
    )
    return [
        Result(
            "Memory per simulated agent",
            f["per_agent_kb"],
            "KB",
            f"{n:,} agents in one process: RSS {f['before_mb']:.0f} → {f['after_mb']:.0f} MB; "
            + started,
            "RSS of one real agent process at idle (above)",
            idle.agent_kb,
        ),
        Result(
            f"CPU of {n:,} idle simulated agents",
            f["cpu"] * 100,
            "% of a core",
            f"{FLEET_WINDOW_S:.0f} s of steady state right after start-up, one process: "
            f"{f['polls']:,.0f} polls answered 304 (the loop kept pace); it waited for a CPU "
            f"{f['waiting'] * 100:.0f} % of the window (other processes had them)",
            f"{n:,} bare asyncio tasks started together, waking every 5 s",
            timers["cpu"] * 100,
        ),
        Result(
            f"Event-loop lag p99, {n:,} idle simulated agents",
            f["lag_p99_ms"],
            "ms",
            f"how late a 50 ms sleep wakes in the same window ({f['lag_samples']:.0f} samples); "
            f"max {f['lag_max_ms']:,.0f} ms",
            f"the same {n:,} bare tasks (max {timers['lag_max_ms']:,.0f} ms)",
            timers["lag_p99_ms"],
        ),
        Result(
            "Simulated agents one process holds (CPU projection)",
            n / f["cpu"],
            "agents",
            "one core ÷ the CPU per idle agent above, if the loop may run flat out; the lag "
            "above grows with the count, and start-up and rollouts need headroom; by memory "
            f"alone, {1024 * 1024 / f['per_agent_kb'] / 1000:,.0f}k agents per GB",
            "agents held in this run",
            n,
        ),
    ]
