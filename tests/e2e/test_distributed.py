"""The provider where users outgrow one machine: CeleryExecutor on PostgreSQL and Redis.

One deployment (tests/support/deployment_distributed.py): two Celery workers, two triggerers, PostgreSQL and
Redis as processes. Each test reads what happened from the metadata database, not from what it
expects: the worker hostname of every try (``task_instance`` and ``task_instance_history``), the
triggerer that held each trigger over time (``trigger.triggerer_id`` sampled every second, with the
``job`` table naming the triggerers), the triggerer that ran it (the trigger log files, named after
the triggerer's job id), and the emulator's count of paid POSTs per generation.

- 200 mapped deferrable generations spread over both workers and both triggerers;
- a triggerer SIGKILLed while it holds its triggers: the other adopts them after the health-check
  threshold;
- a Celery worker SIGKILLed while tasks run on it: the retries resume the same generations;
- PostgreSQL restarted mid-run: the run finishes, nothing is paid twice, nothing is lost.

Run with ``make e2e-distributed``; the figures are printed and kept in
``test-artifacts/e2e-distributed-figures.txt``.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.support.deployment import ARTIFACTS, wait_for
from tests.support.deployment_distributed import (
    TASK_HEARTBEAT_TIMEOUT,
    TASK_QUEUED_TIMEOUT,
    TRIGGERER_CAPACITY,
    TRIGGERER_HEALTH_CHECK_THRESHOLD,
    TRIGGERERS,
    WORKERS,
    DistributedDeployment,
    distributed_deployment,
)

pytestmark = [pytest.mark.distributed, pytest.mark.e2e, pytest.mark.airflow3, pytest.mark.timeout(1200)]

MAPPED = "distributed_kling_mapped"
WORKER_KILL = "distributed_kling_worker_kill"
POOL = "kling_distributed"
#: The headline figure of the issue: generations in one run.
BIG_RUN = 200
FIGURES = ARTIFACTS / "e2e-distributed-figures.txt"


def figure(line: str) -> None:
    """Print one measured figure and keep it in test-artifacts/."""
    print(f"\n[distributed] {line}", flush=True)
    FIGURES.parent.mkdir(parents=True, exist_ok=True)
    with FIGURES.open("a") as out:
        out.write(line + "\n")


@pytest.fixture(scope="module")
def dist() -> Iterator[DistributedDeployment]:
    FIGURES.unlink(missing_ok=True)
    started = time.monotonic()
    with distributed_deployment((MAPPED, WORKER_KILL)) as dep:
        figure(
            f"deployment up in {time.monotonic() - started:.0f} s: PostgreSQL, Redis, api-server, scheduler, "
            f"dag-processor, {len(WORKERS)} Celery workers, {len(TRIGGERERS)} triggerers, emulator"
        )
        # include_deferred: a deferred task keeps its slot, so the pool bounds generations in flight.
        dep.api("POST", "/pools", json={"name": POOL, "slots": BIG_RUN, "include_deferred": True})
        yield dep


@dataclass
class Sampler:
    """Samples a run's task instances and their triggers from the metadata DB every ``interval`` s.

    :param holders: per map index, the distinct (time, triggerer job id) changes of its trigger.
    :param states: per map index, every state seen.
    """

    dep: DistributedDeployment
    dag_id: str
    run_id: str
    interval: float = 1.0
    holders: dict[int, list[tuple[float, int | None]]] = field(default_factory=dict)
    states: dict[int, set[str]] = field(default_factory=dict)
    max_deferred: int = 0
    #: per triggerer job id, the most triggers it held at one time.
    max_held: Counter[int] = field(default_factory=Counter)
    errors: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Sampler:
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(30)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.sample()
            except Exception:  # the database may be restarting: count it, sample again
                self.errors += 1
            self._stop.wait(self.interval)

    def rows(self) -> list[tuple[Any, ...]]:
        return self.dep.query(
            "SELECT ti.map_index, ti.state, t.id, t.triggerer_id FROM task_instance ti "
            "LEFT JOIN trigger t ON t.id = ti.trigger_id "
            "WHERE ti.dag_id = %s AND ti.run_id = %s AND ti.task_id = 'generate' AND ti.map_index >= 0",
            (self.dag_id, self.run_id),
        )

    def sample(self) -> list[tuple[Any, ...]]:
        rows = self.rows()
        now = time.time()
        deferred = 0
        held: Counter[int] = Counter()
        for map_index, state, trigger_id, triggerer_id in rows:
            self.states.setdefault(map_index, set()).add(str(state))
            if state == "deferred":
                deferred += 1
            if triggerer_id is not None:
                held[int(triggerer_id)] += 1
            if trigger_id is not None:
                seen = self.holders.setdefault(map_index, [])
                if not seen or seen[-1][1] != triggerer_id:
                    seen.append((now, triggerer_id))
        self.max_deferred = max(self.max_deferred, deferred)
        for job_id, n in held.items():
            self.max_held[job_id] = max(self.max_held[job_id], n)
        return rows


def triggerer_names(dep: DistributedDeployment) -> dict[int, str]:
    """Triggerer job id -> the triggerer's hostname (triggerer-1/-2), from the job table."""
    rows = dep.query("SELECT id, hostname FROM job WHERE job_type = 'TriggererJob'")
    return {int(job_id): str(host) for job_id, host in rows}


def tries(dep: DistributedDeployment, dag_id: str, run_id: str) -> dict[int, list[tuple[int, str, str]]]:
    """Per map index, every try as (try_number, state, hostname), oldest first, from the DB."""
    rows = dep.query(
        "SELECT map_index, try_number, state, hostname FROM task_instance_history "
        "WHERE dag_id = %s AND run_id = %s AND task_id = 'generate' "
        "UNION ALL SELECT map_index, try_number, state, hostname FROM task_instance "
        "WHERE dag_id = %s AND run_id = %s AND task_id = 'generate' AND map_index >= 0",
        (dag_id, run_id, dag_id, run_id),
    )
    out: dict[int, list[tuple[int, str, str]]] = {}
    for map_index, try_number, state, hostname in sorted(rows, key=lambda r: (r[0], r[1])):
        out.setdefault(int(map_index), []).append((int(try_number), str(state), str(hostname or "")))
    return out


def trigger_runs(dep: DistributedDeployment, dag_id: str, run_id: str, map_index: int) -> dict[int, str]:
    """The triggerer job ids that ran a task's trigger (its trigger log files), with their text."""
    folder = (
        dep.task_logs
        / f"dag_id={dag_id}"
        / f"run_id={run_id}"
        / "task_id=generate"
        / f"map_index={map_index}"
    )
    return {int(p.name.rsplit(".", 2)[-2]): p.read_text() for p in folder.glob("attempt=*.log.trigger.*.log")}


def completed_on(runs: dict[int, str], jobs: set[int]) -> dict[int, str] | None:
    """``runs`` when one of ``jobs`` logged the trigger's completion, else None (for wait_for)."""
    return runs if any("is completed" in runs[j] for j in runs.keys() & jobs) else None


def posts_per_generation(dep: DistributedDeployment, run_id: str, count: int) -> dict[int, int]:
    """Per map index, how many POSTs carried its tag ``[<run_id>#<i>]`` (one read of the emulator)."""
    counts: Counter[int] = Counter()
    tags = {f"[{run_id}#{i}]": i for i in range(count)}
    for request in dep.emulator("GET", "/requests"):
        if request["method"] != "POST" or not isinstance(request["json"], dict):
            continue
        prompt = str(request["json"].get("prompt"))
        for tag, i in tags.items():
            if tag in prompt:
                counts[i] += 1
    return {i: counts[i] for i in range(count)}


def generation_ids(dep: DistributedDeployment, run_id: str) -> dict[str, int]:
    """Emulator generation id -> map index, for the run's generations."""
    out = {}
    for gen_id, gen in dep.emulator("GET", "/generations").items():
        prompt = gen["prompt"]
        if f"[{run_id}#" in prompt:
            out[gen_id] = int(prompt.split(f"[{run_id}#", 1)[1].split("]", 1)[0])
    return out


def start_run(dep: DistributedDeployment, dag_id: str, count: int, seconds: int) -> str:
    return dep.trigger(dag_id, conf={"count": count, "seconds": seconds})


def assert_all_succeeded_once_paid(
    dep: DistributedDeployment, dag_id: str, run_id: str, count: int
) -> dict[int, list[tuple[int, str, str]]]:
    """Every mapped task succeeded, and each generation was paid exactly once."""
    state = dep.run(dag_id, run_id)["state"]
    assert state == "success", dep.describe_run(dag_id, run_id)
    history = tries(dep, dag_id, run_id)
    assert sorted(history) == list(range(count)), "a mapped task is missing"
    assert all(h[-1][1] == "success" for h in history.values()), history
    posts = posts_per_generation(dep, run_id, count)
    assert set(posts.values()) == {1}, {i: n for i, n in posts.items() if n != 1}
    assert len(generation_ids(dep, run_id)) == count
    return history


def test_200_generations_spread_over_both_workers_and_both_triggerers(dist: DistributedDeployment) -> None:
    started = time.monotonic()
    run_id = start_run(dist, MAPPED, BIG_RUN, seconds=45)
    with Sampler(dist, MAPPED, run_id) as sampler:
        dist.wait_run(MAPPED, run_id, timeout=1100)
        sampler.sample()
    elapsed = time.monotonic() - started

    history = assert_all_succeeded_once_paid(dist, MAPPED, run_id, BIG_RUN)
    # Every task deferred and resumed in its first try: no failure hidden by a retry.
    assert all([t[0] for t in h] == [1] for h in history.values()), {
        i: h for i, h in history.items() if len(h) > 1
    }
    workers = Counter(h[-1][2] for h in history.values())
    assert set(workers) == set(WORKERS), workers
    assert all(sampler.states[i] >= {"deferred", "success"} for i in range(BIG_RUN)), sampler.states

    # Which triggerer ran each trigger: exactly one per trigger (its trigger log), the one that held
    # it in the trigger table, which never moved between triggerers.
    names = triggerer_names(dist)
    ran_on: Counter[str] = Counter()
    for i in range(BIG_RUN):
        runs = trigger_runs(dist, MAPPED, run_id, i)
        assert len(runs) == 1, (i, runs.keys())
        (job_id, text) = next(iter(runs.items()))
        # The triggerer's own file for this trigger (its later lines may still be unflushed under load).
        assert "starting" in text or "is completed" in text, text[-2000:]
        held = {h for _, h in sampler.holders.get(i, []) if h is not None}
        assert held <= {job_id}, (i, held, job_id)
        ran_on[names[job_id]] += 1
    assert set(ran_on) == set(TRIGGERERS), ran_on
    # Each triggerer held at most its capacity at any one time.
    assert max(sampler.max_held.values()) <= TRIGGERER_CAPACITY, sampler.max_held
    figure(
        f"{BIG_RUN} mapped deferrable generations in {elapsed:.0f} s: {BIG_RUN} successes, "
        f"{sum(posts_per_generation(dist, run_id, BIG_RUN).values())} POSTs; "
        f"workers {dict(sorted(workers.items()))}; triggerers {dict(sorted(ran_on.items()))}; "
        f"at most {sampler.max_deferred} deferred at once (pool {POOL} counts them), at most "
        f"{dict(sorted((names[j], n) for j, n in sampler.max_held.items()))} triggers held at once "
        f"(capacity {TRIGGERER_CAPACITY} each)"
    )


def test_triggerer_killed_its_triggers_are_adopted(dist: DistributedDeployment) -> None:
    count = 30
    run_id = start_run(dist, MAPPED, count, seconds=60)
    with Sampler(dist, MAPPED, run_id) as sampler:

        def all_deferred_and_held() -> list[tuple[Any, ...]] | None:
            rows = sampler.sample()
            ok = len(rows) == count and all(r[1] == "deferred" and r[3] is not None for r in rows)
            return rows if ok else None

        rows = wait_for("every task deferred and held by a triggerer", all_deferred_and_held, timeout=300)
        held = Counter(int(r[3]) for r in rows)
        names = triggerer_names(dist)
        victim_job, victim_count = held.most_common(1)[0]
        victim = names[victim_job]
        victims = {int(r[0]) for r in rows if r[3] == victim_job}
        dist.kill(victim)
        killed_at = time.time()
        # The dead triggerer's last heartbeat: Airflow counts the threshold from there (a busy
        # triggerer may have heartbeaten a few seconds before it was killed).
        last_beat = dist.query("SELECT latest_heartbeat FROM job WHERE id = %s", (victim_job,))[0][
            0
        ].timestamp()

        def adopted() -> bool:
            current = {int(r[0]): r[3] for r in sampler.sample() if r[1] == "deferred"}
            return all(current.get(i) not in (None, victim_job) for i in victims if i in current)

        wait_for("the surviving triggerer to adopt the triggers", adopted, timeout=180, interval=0.5)
        dist.wait_run(MAPPED, run_id, timeout=600)
        sampler.sample()

    assert_all_succeeded_once_paid(dist, MAPPED, run_id, count)
    history = tries(dist, MAPPED, run_id)
    # Same try throughout: the tasks were never failed or rerun, their triggers moved.
    assert all([t[0] for t in h] == [1] for h in history.values()), history
    survivor_jobs = {j for j, n in names.items() if n != victim}
    moves = []
    for i in sorted(victims):
        holders = [h for _, h in sampler.holders[i] if h is not None]
        assert holders[0] == victim_job, (i, sampler.holders[i])
        assert holders[-1] in survivor_jobs, (i, sampler.holders[i])
        moves.append(next(t for t, h in sampler.holders[i] if h in survivor_jobs) - killed_at)
        # The survivor's log lines reach its file some time after the task resumed (under load, seconds
        # after the run ended), so its completion line is waited for, not read once.
        runs = wait_for(
            f"map index {i}: a surviving triggerer's log to say its trigger completed",
            lambda i=i: completed_on(trigger_runs(dist, MAPPED, run_id, i), survivor_jobs),
            timeout=60,
            on_fail=lambda i=i: {j: t[-1500:] for j, t in trigger_runs(dist, MAPPED, run_id, i).items()},
        )
        # The dead triggerer may have held a trigger without having logged anything of it yet.
        assert "is completed" not in runs.get(victim_job, "")
    for i in set(range(count)) - victims:
        assert victim_job not in {h for _, h in sampler.holders[i]}, (i, sampler.holders[i])
    failover = max(moves)
    # Adopted only once the dead triggerer's heartbeat was older than the health-check threshold
    # (one second of slack for the sampling), and soon after that.
    since_beat = min(moves) + killed_at - last_beat
    assert since_beat >= TRIGGERER_HEALTH_CHECK_THRESHOLD - 1, (since_beat, moves)
    assert failover < TRIGGERER_HEALTH_CHECK_THRESHOLD + 60, moves
    figure(
        f"triggerer failover: {victim} SIGKILLed holding {victim_count} of {count} triggers; "
        f"the other adopted all of them {min(moves):.1f}-{failover:.1f} s after the kill, {since_beat:.1f} s "
        f"after its last heartbeat (health-check threshold {TRIGGERER_HEALTH_CHECK_THRESHOLD} s); "
        f"{count} successes, 1 POST each"
    )
    # Back to two triggerers for the next tests.
    dist.start_component(victim)


def test_worker_killed_retries_resume_the_same_generations(dist: DistributedDeployment) -> None:
    count = 6
    run_id = start_run(dist, WORKER_KILL, count, seconds=20)
    markers = {i: dist.markers / f"{run_id}.{i}.submitted" for i in range(count)}
    wait_for(
        "every task to POST and hold its worker",
        lambda: all(m.exists() for m in markers.values()),
        timeout=300,
        on_fail=lambda: dist.describe_run(WORKER_KILL, run_id),
    )
    submitted = {i: json.loads(m.read_text()) for i, m in markers.items()}
    on_worker = Counter(s["worker"] for s in submitted.values())
    victim = on_worker.most_common(1)[0][0]
    killed = {i for i, s in submitted.items() if s["worker"] == victim}
    assert posts_per_generation(dist, run_id, count) == dict.fromkeys(range(count), 1)

    dist.kill(victim)
    killed_at = time.monotonic()
    for i in set(range(count)) - killed:
        (dist.markers / f"{run_id}.{i}.release").touch()
    dist.wait_run(WORKER_KILL, run_id, timeout=600)
    recovered = time.monotonic() - killed_at

    history = assert_all_succeeded_once_paid(dist, WORKER_KILL, run_id, count)
    survivor = next(w for w in WORKERS if w != victim)
    gens = {i: g for g, i in generation_ids(dist, run_id).items()}
    for i in range(count):
        first = history[i][0]
        assert first[0] == 1
        assert first[2] == submitted[i]["worker"], (i, history[i])
        assert gens[i] == submitted[i]["generation_id"]
        if i in killed:
            # The first try died with its worker; the retry ran on the other one and reconnected.
            assert [t[0] for t in history[i]] == [1, 2], history[i]
            assert history[i][0][1] in ("failed", "up_for_retry"), history[i]
            assert history[i][1][2] == survivor, history[i]
            log = dist.task_log(WORKER_KILL, run_id, "generate", 2, map_index=i)
            assert f"Reconnecting to Kling generation {submitted[i]['generation_id']}" in log
        else:
            assert [t[0] for t in history[i]] == [1], history[i]
    figure(
        f"Celery worker failover: {victim} SIGKILLed with {len(killed)} of {count} tasks running on it; "
        f"their retries ran on {survivor} and reconnected to the same generations; run done "
        f"{recovered:.0f} s later (task heartbeat timeout {TASK_HEARTBEAT_TIMEOUT} s); 1 POST each"
    )
    dist.start_component(victim)


def test_postgres_restarted_mid_run(dist: DistributedDeployment) -> None:
    count = 20
    run_id = start_run(dist, MAPPED, count, seconds=30)
    with Sampler(dist, MAPPED, run_id) as sampler:

        def midway() -> bool:
            states = Counter(r[1] for r in sampler.sample())
            return states["deferred"] >= 5

        wait_for("some tasks deferred", midway, timeout=300)
        before = Counter(r[1] for r in sampler.rows())
        # Airflow's scheduler and dag-processor exit when they lose their database; in production
        # their supervisor (Kubernetes, systemd, the Helm chart's deployments) starts them again,
        # and so does the harness here, counting each restart.
        with dist.supervised():
            dist.stop_postgres()
            down_at = time.monotonic()
            time.sleep(3)
            dist.start_postgres()
            downtime = time.monotonic() - down_at
            dist.wait_run(MAPPED, run_id, timeout=600)
            finished = time.monotonic() - down_at - downtime
            dist.wait_healthy()

    history = assert_all_succeeded_once_paid(dist, MAPPED, run_id, count)
    retried = {i: h for i, h in history.items() if len(h) > 1}
    restarted = dict(sorted(dist.restarts.items())) or "none"
    figure(
        f"PostgreSQL restarted ({downtime:.1f} s down) with tasks {dict(before)}: {count} successes, "
        f"1 POST each, {len(retried)} tasks retried; components that exited and were restarted: {restarted}; "
        f"run done {finished:.0f} s after the restart (task_queued_timeout {TASK_QUEUED_TIMEOUT} s)"
    )
