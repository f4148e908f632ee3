"""The approval lifecycle as a Hypothesis state machine over the gateway's real units of work
(security.md §7.4 property 5; architecture.md "Approval lifecycle"), on SQLite and PostgreSQL.

Each example drives the real functions, through the real group commit (``CommitQueue``) or each
in a transaction of its own (``gateway.worker.run_unit``-style), on a migrated database with an
agent key, another agent's key and an admin key:

* the agent submits calls (``calls.submit_call``): most need a human, some the policy allows or
  blocks; it replays a submission (same body, or another body under the same id);
* humans approve or deny (``approvals.decide_call``: console users, a Slack user, a CLI operator),
  clicking any call or working through the review queue, at once or only at (or a minute
  before) the deadline; an API key tries to decide;
* time passes, and the expiry sweep runs (``expiry.sweep_expired``, with an explicit ``now`` or
  the database's clock), as the background sweeper or racing everything else;
* the agent, or another agent, claims (``calls.claim_call``, and ``calls.attempt_claim`` as a
  ``claim=1`` long-poll does) and reports outcomes (``calls.record_outcome``); reads go through
  ``calls.read_call`` as the agent, another agent and an admin;
* a *burst* runs several clicks, sweeps, claims and outcome reports against one call inside a
  single group-commit transaction, the way concurrent requests meet in production.

A plain model predicts every answer (who wins, which 409 code, which status). After every step:

* a call has at most one terminal decision event (``approval.decided`` or ``approval.expired``),
  and exactly the one the model expects; every refused click left one ``approval.decision_rejected``;
* ``execution.claimed`` at most once per call, only after an ``approval.decided`` approve: never
  for a denied or expired call; allowed calls are claimed by their submission instead;
* ``tool.outcome`` at most once, and for an approval only after its claim;
* the stored status and the status a reader gets (``read_call``) agree with the model;
* ``audit.verify_rows`` accepts the chain (each new row against the verified head after every
  step, the whole chain from genesis after every example).

Time: deadlines are enforced by the database's clock (``expiry.db_now``: PostgreSQL's ``now()``,
which no process can fake), so the machine moves *time* by moving every pending call's
``expires_at`` earlier, the one change migration 0006 lets anything make to a pending call ("an
operator moving a live deadline"). The model's clock counts in whole minutes against a 60-minute
TTL, so the real seconds a run takes never decide anything.

Reproducible (``derandomize``); to explore further, run it with ``derandomize=False`` and more
examples.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import hypothesis
import pytest
from hypothesis import HealthCheck
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle, RuleBasedStateMachine, initialize, invariant, precondition, rule, run_state_machine_as_test,
)
from sqlalchemy import Engine, select, update

from gateway.approvals import decide_call
from gateway.audit import GENESIS_HASH, SYSTEM, Actor, AuditBatch, ChainRow, stream_rows, verify_rows
from gateway.calls import attempt_claim, claim_call, prepare_call, read_call, record_outcome, submit_call
from gateway.commit_queue import CommitQueue
from gateway.db import make_engine
from gateway.errors import Conflict, DomainError, Forbidden, NotFound, Unprocessable
from gateway.expiry import sweep_expired
from gateway.key_admin import create_key
from gateway.keys import ParsedKey, parse_bearer
from gateway.models import AuditEvent, ToolCall
from gateway.policy_store import ActivePolicy, load_active
from gateway.webhooks.delivery import in_transaction

PEPPER = b"state-machine-pepper-for-tests-only-00000000"
TTL_MINUTES = 60
#: Few calls per example, so each gets deep into its lifecycle; a new one whenever none is waiting.
MAX_CALLS = 6
POLICY = f"""
defaults: {{action: allow, approval_timeout: {TTL_MINUTES}m}}
policies:
  - tool: wire_transfer
    default: require_approval
  - tool: delete_database
    default: block
"""
TOOL = {"approval": "wire_transfer", "allowed": "send_email", "blocked": "delete_database"}
HUMANS = (Actor("user", "alice"), Actor("user", "bob"), Actor("slack_user", "U024BE7LH"),
          Actor("operator", "carol"))
CHANNEL = {"user": "console", "slack_user": "slack", "operator": "cli"}
OUTCOMES = ({"status": "succeeded", "duration_ms": 40},
            {"status": "failed", "error": "timeout", "duration_ms": 9000},
            {"status": "succeeded"})
#: Who claims and reports: mostly the call's own agent; another agent must get 404, never the call.
AGENTS = ("agent", "agent", "agent", "other_agent")
#: How time passes (model minutes, or to the next pending deadline / a minute before it), and how
#: long before a click or a claim (mostly at once).
STEPS: tuple[str | int, ...] = ("to the next deadline", "to a minute before it", 10, 30)
DELAYS = (None, None, None, "to a minute before it", "to the next deadline")
APPROVE = st.sampled_from([True, True, False])  # approvals lead further (claims, outcomes)
DECIDED_EVENTS = ("approval.decided", "approval.expired")
#: Stored statuses an approval call has once a human (or the sweep) decided it.
AFTER_DECISION = frozenset({"approved", "denied", "expired", "running", "succeeded", "failed"})

PG_EXAMPLES = 25
hypothesis_settings = hypothesis.settings(
    max_examples=60,
    stateful_step_count=30,
    derandomize=True,  # reproducible in CI (see the module docstring to explore further)
    database=None,
    deadline=None,  # database round trips through the group commit: time varies a lot on a loaded machine
    suppress_health_check=[HealthCheck.too_slow],  # each step commits, some fsync
)


# -- the model ----------------------------------------------------------------------------------------


@dataclass
class ModelCall:
    id: str
    kind: str  # approval | allowed | blocked
    body: dict[str, Any]
    status: str  # as stored
    deadline: int | None  # model minutes; pending approvals only
    claims: int = 0  # explicit claims won (allowed calls are claimed by their submission)
    outcome: dict[str, Any] | None = None
    refused_clicks: int = 0
    decision: str | None = None  # approve | deny, of the click that won

    def effective(self, clock: int) -> str:
        if self.status == "pending" and self.deadline is not None and clock >= self.deadline:
            return "expired"
        return self.status


Outcome = tuple[bool, Any]  # (True, result) or (False, the DomainError raised / the refusal returned)


@dataclass
class Step:
    """One unit of work and how the model judges its outcome (judged in execution order)."""

    describe: str
    work: Callable[[Any, AuditBatch], Any]
    judge: Callable[[Outcome], None]


# -- the database of one example ------------------------------------------------------------------------


@dataclass
class Gateway:
    queue_engine: Engine
    unit_engine: Engine
    reader: Engine
    policy: ActivePolicy
    agent: ParsedKey
    other_agent: ParsedKey
    admin: ParsedKey
    queue: CommitQueue
    run_unit: Callable[[Callable[[Any, AuditBatch], Any]], Any]
    engines: list[Engine] = field(default_factory=list)
    verified: tuple[int, bytes] = (0, GENESIS_HASH)

    def close(self) -> None:
        self.queue.stop()
        for engine in self.engines:
            engine.dispose()


def open_gateway(url: str, policy_file: Path) -> Gateway:
    queue_engine, unit_engine = make_engine(url, writer=True), make_engine(url, writer=True)
    reader = make_engine(url)
    with unit_engine.begin() as conn:
        policy = load_active(conn, policy_file)
        keys = [
            create_key(conn, kind=kind, agent=agent, name="sm", pepper=PEPPER, actor=SYSTEM).key  # type: ignore[arg-type]
            for kind, agent in (("agent", "billing-bot"), ("agent", "other-bot"), ("admin", None))
        ]
    agent, other_agent, admin = (parse_bearer(f"Bearer {key}") for key in keys)
    assert agent is not None and other_agent is not None and admin is not None
    queue = CommitQueue(queue_engine)
    queue.start()
    return Gateway(queue_engine, unit_engine, reader, policy, agent, other_agent, admin, queue,
                   in_transaction(unit_engine), [queue_engine, unit_engine, reader])


def _settle(future: Future[Any]) -> Outcome:
    try:
        return True, future.result(timeout=60)
    except DomainError as exc:
        return False, exc


def _decision(outcome: Outcome) -> Outcome:
    """``decide_call`` answers a refused click with a ``Decision`` carrying the refusal (its
    ``approval.decision_rejected`` event commits); a winning click's ``Decision`` has the view."""
    ok, value = outcome
    if not ok:
        return outcome
    refusal = getattr(value, "refusal", None)
    if refusal is not None:
        return False, refusal
    return True, getattr(value, "view", value)


class ApprovalLifecycle(RuleBasedStateMachine):
    """See the module docstring. ``gw`` is set by the test before the machine runs.

    The examples of one test share its database (PostgreSQL makes a database per example far too
    slow): every call id is new, so each example judges only its own calls, and a call left
    pending by an earlier example is just one more row the sweep and the clock act on."""

    gw: Gateway

    calls = Bundle("calls")

    def __init__(self) -> None:
        super().__init__()
        self.clock = 0  # model minutes
        self.model: dict[str, ModelCall] = {}
        self.verified = self.gw.verified  # (seq, hash) of the chain head checked so far
        self.history: dict[str, list[tuple[int, str, dict[str, Any]]]] = {}  # this example's calls' events

    def teardown(self) -> None:
        with self.gw.reader.connect() as conn:  # the whole chain, from genesis, once per example
            chain = verify_rows(stream_rows(conn))
        assert chain.ok, chain
        self.gw.verified = (chain.head_seq, bytes.fromhex(chain.head_hash))

    # -- running units -------------------------------------------------------------------------------

    def run(self, step: Step, via: str) -> None:
        if via == "queue":
            outcome = _settle(self.gw.queue.submit(step.work))
        else:  # a unit in its own transaction, as Celery workers and the CLI run them
            try:
                outcome = True, self.gw.run_unit(step.work)
            except DomainError as exc:
                outcome = False, exc
        step.judge(outcome)

    def run_in_one_batch(self, steps: list[Step]) -> None:
        """Every step in ONE group-commit transaction, in order: the queue starts only once all
        of them are queued, so its writer thread takes them as one batch."""
        queue = CommitQueue(self.gw.queue_engine)
        futures = [queue.submit(step.work) for step in steps]
        queue.start()
        try:
            outcomes = [_settle(f) for f in futures]
        finally:
            queue.stop()
        for step, outcome in zip(steps, outcomes, strict=True):
            step.judge(outcome)

    # -- steps: what each unit does, and what the model says it must answer ---------------------------

    def decide_step(self, call_id: str, approve: bool, human: Actor) -> Step:
        def work(conn: Any, audit: AuditBatch) -> Any:
            return decide_call(conn, audit, call_id=call_id, approve=approve, actor=human,
                               channel=CHANNEL[human.type], comment=f"{human.id} says {'yes' if approve else 'no'}")

        def judge(outcome: Outcome) -> None:
            ok, value = _decision(outcome)
            call = self.model[call_id]
            before = call.effective(self.clock)
            if before == "pending":
                assert ok, f"{human.id} could not decide pending call {call_id}: {value!r}"
                call.status, call.decision = ("approved", "approve") if approve else ("denied", "deny")
                assert value.row["status"] == call.status and value.row["decided_by"] == human.id
                return
            assert not ok, f"{human.id} decided call {call_id} although it was {before}"
            assert isinstance(value, Conflict), value
            assert value.code == ("expired" if before == "expired" else "already_decided"), (before, value.code)
            call.refused_clicks += 1

        return Step(f"decide({call_id}, {approve}, {human.id})", work, judge)

    def sweep_step(self, explicit_now: bool) -> Step:
        def work(conn: Any, audit: AuditBatch) -> Any:
            return sweep_expired(conn, audit, now=datetime.now(UTC) if explicit_now else None)

        def judge(outcome: Outcome) -> None:
            ok, value = outcome
            assert ok, value
            due = {c.id for c in self.model.values()
                   if c.status == "pending" and c.effective(self.clock) == "expired"}
            assert len(value) == len(set(value)), value
            assert set(value) & self.model.keys() == due, (sorted(value), sorted(due))
            for call_id in due:
                self.model[call_id].status = "expired"

        return Step(f"sweep(explicit_now={explicit_now})", work, judge)

    def claim_step(self, call_id: str, claimant: str = "agent", long_poll: bool = False) -> Step:
        """``claim_call`` (``POST /v1/calls/{id}/claim``), or with ``long_poll`` ``attempt_claim``
        (``GET /v1/calls/{id}?claim=1``), which answers a not-yet-runnable call unclaimed instead
        of refusing it."""
        claim = attempt_claim if long_poll else claim_call

        def work(conn: Any, audit: AuditBatch) -> Any:
            return claim(conn, audit, call_id=call_id, key=getattr(self.gw, claimant), pepper=PEPPER)

        def judge(outcome: Outcome) -> None:
            ok, value = outcome
            call = self.model[call_id]
            before = call.effective(self.clock)
            if claimant != "agent":  # another agent's call does not exist for it
                assert not ok and isinstance(value, NotFound), f"{claimant} claimed call {call_id}: {value!r}"
                return
            won = ok and (value.claimed if long_poll else True)
            if before == "approved":
                assert won, f"claim of approved call {call_id} refused: {value!r}"
                assert (value.view if long_poll else value).row["status"] == "running"
                call.status, call.claims = "running", call.claims + 1
                return
            assert not won, f"call {call_id} was claimed although it was {before}"
            expected = {"pending": "not_approved", "denied": "not_runnable", "expired": "not_runnable",
                        "blocked": "not_runnable"}.get(before, "already_claimed")
            if long_poll and expected != "already_claimed":  # answered as it stands, unclaimed
                assert ok and value.view.status == before, (before, value)
                return
            assert not ok and isinstance(value, Conflict) and value.code == expected, (before, value)

        return Step(f"claim({call_id}, {claimant}, long_poll={long_poll})", work, judge)

    def outcome_step(self, call_id: str, body: dict[str, Any], reporter: str = "agent") -> Step:
        def work(conn: Any, audit: AuditBatch) -> Any:
            return record_outcome(conn, audit, call_id=call_id, body=dict(body), key=getattr(self.gw, reporter),
                                  pepper=PEPPER)

        def judge(outcome: Outcome) -> None:
            ok, value = outcome
            call = self.model[call_id]
            before = call.effective(self.clock)
            if reporter != "agent":
                assert not ok and isinstance(value, NotFound), f"{reporter} reported on call {call_id}: {value!r}"
                return
            if call.outcome is not None:
                if call.outcome == body:
                    assert ok, f"the same outcome again was refused: {value!r}"
                else:
                    assert not ok and isinstance(value, Conflict), value
                    assert value.code == "outcome_already_recorded", value
                return
            if before in ("running", "allowed"):
                assert ok, f"outcome of {before} call {call_id} refused: {value!r}"
                call.outcome, call.status = dict(body), body["status"]
                assert value.row["status"] == call.status
                return
            assert not ok, f"an outcome was recorded for call {call_id} although it was {before}"
            expected = "not_claimed" if before == "approved" else "not_runnable"
            assert isinstance(value, Conflict) and value.code == expected, (before, value)

        return Step(f"outcome({call_id}, {body}, {reporter})", work, judge)

    # -- rules ---------------------------------------------------------------------------------------

    @initialize(target=calls)
    def first_call(self) -> str:
        return self._submit("approval", 850)

    @precondition(lambda self: len(self.model) < MAX_CALLS
                  and not any(c.effective(self.clock) == "pending" for c in self.model.values()))
    @rule(target=calls, kind=st.sampled_from(["approval", "approval", "approval", "allowed", "blocked"]),
          amount=st.integers(1, 10_000))
    def submit(self, kind: str, amount: int) -> str:
        return self._submit(kind, amount)

    def _submit(self, kind: str, amount: int) -> str:
        call_id = str(uuid.uuid4())
        body = {"id": call_id, "tool": TOOL[kind], "args": {"amount": amount, "to": "acct_1"}}
        incoming = prepare_call(body, secret=PEPPER, max_args_bytes=64 * 1024)
        view = self.gw.queue.run_sync(lambda conn, audit: submit_call(
            conn, audit, incoming=incoming, key=self.gw.agent, pepper=PEPPER, policy=self.gw.policy))
        status = {"approval": "pending", "allowed": "allowed", "blocked": "blocked"}[kind]
        assert view.created and view.row["status"] == status, view.row
        self.model[call_id] = ModelCall(call_id, kind, body, status,
                                        self.clock + TTL_MINUTES if kind == "approval" else None)
        return call_id

    @rule(call_id=calls, same_body=st.booleans())
    def replay_submission(self, call_id: str, same_body: bool) -> None:
        """The SDK retries with the same id: the same body answers the call as it stands, another
        body is 422 ``idempotency_key_reused``; neither writes anything."""
        call = self.model[call_id]
        body = call.body if same_body else {**call.body, "args": {"amount": -1}}
        incoming = prepare_call(body, secret=PEPPER, max_args_bytes=64 * 1024)
        try:
            view = self.gw.queue.run_sync(lambda conn, audit: submit_call(
                conn, audit, incoming=incoming, key=self.gw.agent, pepper=PEPPER, policy=self.gw.policy))
        except Unprocessable as exc:
            assert not same_body and exc.code == "idempotency_key_reused", exc
            return
        assert same_body and not view.created
        assert view.status == call.effective(self.clock), (view.row["status"], call)

    @rule(call_id=calls, approve=APPROVE, human=st.sampled_from(HUMANS), via=st.sampled_from(["queue", "unit"]),
          after=st.sampled_from(DELAYS))
    def decide(self, call_id: str, approve: bool, human: Actor, via: str, after: str | None) -> None:
        """A reviewer clicks, maybe ``after`` time has passed (right at, or just before, its deadline)."""
        self.advance(after, call_id)
        self.run(self.decide_step(call_id, approve, human), via)

    def waiting(self) -> list[str]:
        return [c.id for c in self.model.values() if c.effective(self.clock) == "pending"]

    @precondition(lambda self: bool(self.waiting()))
    @rule(approve=APPROVE, human=st.sampled_from(HUMANS), via=st.sampled_from(["queue", "unit"]),
          after=st.sampled_from(DELAYS))
    def review_queue(self, approve: bool, human: Actor, via: str, after: str | None) -> None:
        """A reviewer takes the oldest call of the review queue, and clicks maybe only at (or a
        minute before) its deadline: the lifecycle moves on, and late clicks meet live deadlines."""
        call_id = self.waiting()[0]
        self.advance(after, call_id)
        self.run(self.decide_step(call_id, approve, human), via)

    @precondition(lambda self: any(c.status == "approved" for c in self.model.values()))
    @rule(via=st.sampled_from(["queue", "unit"]), long_poll=st.booleans(), body=st.sampled_from((None, *OUTCOMES)))
    def agent_runs_approved_call(self, via: str, long_poll: bool, body: dict[str, Any] | None) -> None:
        """The agent learns of an approval, claims the call and (unless it crashes) reports how it ended."""
        call_id = next(c.id for c in self.model.values() if c.status == "approved")
        self.run(self.claim_step(call_id, long_poll=long_poll), via)
        if body is not None:
            self.run(self.outcome_step(call_id, body), via)

    @rule(call_id=calls, approve=st.booleans())
    def api_key_tries_to_decide(self, call_id: str, approve: bool) -> None:
        """No API key decides: refused before anything is written, whatever the call's state."""
        agent_key = Actor("agent_key", self.gw.agent.key_id)
        with pytest.raises(Forbidden) as refused:
            self.gw.queue.run_sync(lambda conn, audit: decide_call(
                conn, audit, call_id=call_id, approve=approve, actor=agent_key, channel="console", comment=None))
        assert refused.value.code == "not_a_human"

    @rule(explicit_now=st.booleans(), via=st.sampled_from(["queue", "unit"]))
    def sweep(self, explicit_now: bool, via: str) -> None:
        self.run(self.sweep_step(explicit_now), via)

    @rule(step=st.sampled_from(STEPS), sweeper_ticks=st.booleans())
    def time_passes(self, step: str | int, sweeper_ticks: bool) -> None:
        """Time passes; with ``sweeper_ticks`` the background sweep (every few seconds in
        production) then runs at the new time, through the group commit."""
        self.advance(step)
        if sweeper_ticks:
            self.run(self.sweep_step(explicit_now=False), "queue")

    def advance(self, step: str | int | None, call_id: str | None = None) -> None:
        """Move every pending deadline earlier: to the gateway that is exactly time passing. The
        named steps land exactly on, or a minute before, a deadline (``call_id``'s if it is still
        waiting, else the next one): the boundaries where a late click, the sweep and a claim must
        agree."""
        upcoming = [c.deadline for c in self.model.values()
                    if c.status == "pending" and c.deadline is not None and c.deadline > self.clock
                    and (call_id is None or c.id == call_id)] or [
            c.deadline for c in self.model.values()
            if c.status == "pending" and c.deadline is not None and c.deadline > self.clock]
        if step is None or (isinstance(step, str) and not upcoming):
            return
        if isinstance(step, int):
            minutes = step
        else:
            minutes = min(upcoming) - self.clock - (1 if "before" in step else 0)
        with self.gw.unit_engine.begin() as conn:
            pending = conn.execute(select(ToolCall.id, ToolCall.expires_at)
                                   .where(ToolCall.status == "pending")).all()
            for call_id, expires_at in pending:
                conn.execute(update(ToolCall).where(ToolCall.id == call_id)
                             .values(expires_at=expires_at - timedelta(minutes=minutes)))
        self.clock += minutes

    @rule(call_id=calls, via=st.sampled_from(["queue", "unit"]), claimant=st.sampled_from(AGENTS),
          long_poll=st.booleans(), after=st.sampled_from(DELAYS))
    def claim(self, call_id: str, via: str, claimant: str, long_poll: bool, after: str | None) -> None:
        self.advance(after, call_id)
        self.run(self.claim_step(call_id, claimant, long_poll), via)

    @rule(call_id=calls, body=st.sampled_from(OUTCOMES), via=st.sampled_from(["queue", "unit"]),
          reporter=st.sampled_from(AGENTS))
    def report_outcome(self, call_id: str, body: dict[str, Any], via: str, reporter: str) -> None:
        self.run(self.outcome_step(call_id, body, reporter), via)

    @rule(call_id=calls, actions=st.lists(
        st.one_of(st.tuples(st.just("decide"), APPROVE, st.sampled_from(HUMANS)),
                  st.tuples(st.just("sweep"), st.booleans()),
                  st.tuples(st.just("claim"), st.booleans()),
                  st.tuples(st.just("outcome"), st.sampled_from(OUTCOMES))),
        min_size=2, max_size=5))
    def burst(self, call_id: str, actions: list[tuple[Any, ...]]) -> None:
        """Concurrent clicks, sweeps, claims and outcome reports on one call, in one transaction."""
        steps = []
        for action in actions:
            if action[0] == "decide":
                steps.append(self.decide_step(call_id, action[1], action[2]))
            elif action[0] == "sweep":
                steps.append(self.sweep_step(action[1]))
            elif action[0] == "claim":
                steps.append(self.claim_step(call_id, long_poll=action[1]))
            else:
                steps.append(self.outcome_step(call_id, action[1]))
        self.run_in_one_batch(steps)

    @rule(call_id=calls, reader=st.sampled_from(["agent", "other_agent", "admin"]))
    def read(self, call_id: str, reader: str) -> None:
        with self.gw.reader.connect() as conn:
            try:
                view = read_call(conn, call_id=call_id, key=getattr(self.gw, reader), pepper=PEPPER)
            except NotFound:
                assert reader == "other_agent"
                return
        assert reader != "other_agent", "another agent read the call"
        call = self.model[call_id]
        assert view.status == call.effective(self.clock), (view.row["status"], call)

    # -- invariants -----------------------------------------------------------------------------------

    @invariant()
    def the_record_agrees_with_the_model(self) -> None:
        head_seq, head_hash = self.verified
        with self.gw.reader.connect() as conn:
            rows = {r.id: r for r in conn.execute(select(ToolCall.id, ToolCall.status, ToolCall.claimed_at)
                                                  .where(ToolCall.id.in_(sorted(self.model))))}
            new = [ChainRow(r.seq, r.event_id, r.event_type, r.tool_call_id, r.canonical, bytes(r.prev_hash),
                            bytes(r.row_hash))
                   for r in conn.execute(select(AuditEvent.seq, AuditEvent.event_id, AuditEvent.event_type,
                                                AuditEvent.tool_call_id, AuditEvent.canonical, AuditEvent.prev_hash,
                                                AuditEvent.row_hash)
                                         .where(AuditEvent.seq > head_seq).order_by(AuditEvent.seq))]
        # The chain from the head verified after the previous step: every row is checked once,
        # linked to a verified predecessor (and the whole chain again at the end of the example).
        chain = verify_rows(new, start_seq=head_seq + 1, trusted_hash=head_hash)
        assert chain.ok, chain
        self.verified = (chain.head_seq, bytes.fromhex(chain.head_hash))
        for event in new:
            if event.tool_call_id in self.model:
                self.history.setdefault(event.tool_call_id, []).append(
                    (event.seq, event.event_type, json.loads(event.canonical)["data"]))
        for call in self.model.values():
            row = rows[call.id]
            assert row.status == call.status, (call.id, row.status, call)
            history = self.history.get(call.id, [])
            kinds = Counter(kind for _, kind, _ in history)
            terminal = [(seq, kind, data) for seq, kind, data in history if kind in DECIDED_EVENTS]
            assert len(terminal) <= 1, (call.id, terminal)
            expected_terminal = call.kind == "approval" and call.status in AFTER_DECISION
            assert len(terminal) == expected_terminal, (call.id, call.status, terminal)
            assert kinds["approval.decision_rejected"] == call.refused_clicks, (call.id, kinds, call)
            claims = [seq for seq, kind, _ in history if kind == "execution.claimed"]
            assert len(claims) == call.claims <= 1, (call.id, claims, call)
            if claims:
                assert terminal and terminal[0][1] == "approval.decided", (call.id, history)
                assert terminal[0][2]["decision"] == "approve", (call.id, history)
                assert terminal[0][0] < claims[0], (call.id, history)
                assert call.decision == "approve"
            assert (row.claimed_at is not None) == (call.claims == 1 or call.kind == "allowed"), (call.id, row)
            outcomes = [seq for seq, kind, _ in history if kind == "tool.outcome"]
            assert len(outcomes) == (call.outcome is not None), (call.id, outcomes, call)
            if outcomes and call.kind == "approval":
                assert claims and claims[0] < outcomes[0], (call.id, history)
            if call.kind != "approval":
                assert not terminal and not claims and kinds["approval.requested"] == 0


# -- the tests ------------------------------------------------------------------------------------------


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    path = tmp_path / "approvals.yaml"
    path.write_text(POLICY)
    return path


@pytest.fixture
def gateway(database_url: str, policy_file: Path) -> Iterator[Gateway]:
    """The gateway's units on a fresh migrated database (SQLite and PostgreSQL), for one test."""
    gw = open_gateway(database_url, policy_file)
    try:
        yield gw
    finally:
        gw.close()


def test_approval_lifecycle(gateway: Gateway) -> None:
    """Random interleavings of submissions, decisions, sweeps, time, claims, outcomes, replays and
    reads never break the lifecycle's rules (see the module docstring)."""
    machine = type("ApprovalLifecycleUnderTest", (ApprovalLifecycle,), {"gw": gateway})
    on_postgres = gateway.queue_engine.dialect.name == "postgresql"
    # PostgreSQL round trips cost more; its own paths (the database clock, RETURNING, the 0006
    # triggers) are covered in fewer examples.
    run_state_machine_as_test(machine, settings=hypothesis.settings(
        hypothesis_settings, max_examples=PG_EXAMPLES if on_postgres else hypothesis_settings.max_examples))
