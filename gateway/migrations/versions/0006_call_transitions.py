"""Finished tool-call states are immutable: the database allows only the lifecycle's transitions.

The application already changes a call only through conditional UPDATEs (a decision, an expiry,
the execution claim, the outcome). These guards make the same rules hold for anything else that
can reach the table (a buggy code path, a hand-typed ``UPDATE``, a compromised replica's SQL),
so a decided, expired, blocked or finished call cannot be rewritten after the fact and the audit
chain (which records every transition) always describes the row as it is. Defence in depth,
security.md §1.8 ("Terminal states are immutable ... a trigger rejects any UPDATE").

What the code writes today (gateway/calls.py, approvals.py, expiry.py), and so all that is allowed:

=====================================  ==========================================================
``pending -> pending``                 only ``expires_at`` (an operator moving a live deadline)
``pending -> approved | denied``       ``decided_at``, ``decided_by`` (both required),
                                       ``decided_channel``, ``comment`` — written once
``pending -> expired``                 the same decision columns (the sweep: ``system:expiry``)
``approved -> running``                ``claimed_at`` (required), ``claimed_by`` — the one-shot
                                       claim; allowed calls are stamped claimed at insert
``allowed | running -> succeeded |     the ``outcome_*`` columns and ``duration_ms``, written
failed``                               once; ``outcome_status`` must equal the new status
``fail_open -> fail_open``             the outcome columns, written once (the tool already ran
                                       while the gateway was unreachable; its status stays)
=====================================  ==========================================================

Everything the agent submitted and the policy decided (``id``, ``agent``, ``tool``, ``args``,
``args_fp``, ``redactions``, ``session_id``, ``framework``, ``metadata``, ``fingerprint``,
``fail_open``, ``decision``, ``reason``, ``rule``, ``policy_version``, ``created_at``) never
changes. ``blocked``, ``denied``, ``expired``, ``succeeded`` and ``failed`` are terminal: no
column of such a row can change. Rows are never deleted.

* PostgreSQL: one BEFORE UPDATE OR DELETE row trigger and a BEFORE TRUNCATE statement trigger,
  ``ENABLE ALWAYS`` like migration 0001's audit guards, so they fire for the table owner and
  under ``session_replication_role = replica`` too. A refused transition is SQLSTATE 23514
  (check_violation: the row would break the table's rules, an ``IntegrityError`` to SQLAlchemy,
  as on SQLite); a DELETE or TRUNCATE is 42501 (insufficient_privilege), as for the audit log.
* SQLite: ``RAISE(ABORT)`` triggers (``IntegrityError``), one per rule so the message names the
  rule, plus an INSERT guard: ``INSERT OR REPLACE`` deletes the conflicting row without firing
  DELETE triggers (security.md §4.5), so an insert of an existing id is refused outright.

The rules are written once (``RULES``) and rendered for both engines, so they cannot drift.
A later migration that rebuilds ``tool_call`` on SQLite (``batch_alter_table`` copies the table)
drops these triggers with the old table and must create them again.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-21
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

SUBMITTED = ("id", "agent", "tool", "args", "args_fp", "redactions", "session_id", "framework", "metadata",
             "fingerprint", "fail_open", "decision", "reason", "rule", "policy_version", "created_at")
DECISION = ("decided_at", "decided_by", "decided_channel", "comment")
CLAIM = ("claimed_at", "claimed_by")
OUTCOME = ("outcome_status", "outcome_error", "duration_ms", "outcome_at", "outcome_fingerprint")

DECIDE = "OLD.status = 'pending' AND NEW.status IN ('approved', 'denied', 'expired')"
CLAIMING = "OLD.status = 'approved' AND NEW.status = 'running'"
FINISH = "OLD.status IN ('allowed', 'running') AND NEW.status IN ('succeeded', 'failed')"
OUTCOME_MOVE = f"(({FINISH}) OR (OLD.status = 'fail_open' AND NEW.status = 'fail_open'))"


def _changed(columns: tuple[str, ...], ne: str) -> str:
    return "(" + " OR ".join(f"NEW.{c} {ne} OLD.{c}" for c in columns) + ")"


def _unset(columns: tuple[str, ...]) -> str:
    return "(" + " AND ".join(f"OLD.{c} IS NULL" for c in columns) + ")"


def rules(ne: str) -> list[tuple[str, str, str]]:
    """(name, message, condition that means the UPDATE is refused); ``ne`` is the null-safe
    "differs" operator of the engine (``IS DISTINCT FROM`` / ``IS NOT``)."""
    return [
        ("submitted", "tool_call: the submitted call and its policy decision are immutable",
         _changed(SUBMITTED, ne)),
        ("transition", "tool_call: status change is not a lifecycle transition",
         f"NEW.status <> OLD.status AND NOT (({DECIDE}) OR ({CLAIMING}) OR ({FINISH}))"),
        ("decision_once", "tool_call: the decision (decided_*, comment) is written once, when a pending call is decided",
         f"{_changed(DECISION, ne)} AND NOT (({DECIDE}) AND {_unset(DECISION)})"),
        ("decision_named", "tool_call: a decision must record when and by whom it was made",
         f"({DECIDE}) AND (NEW.decided_at IS NULL OR NEW.decided_by IS NULL)"),
        ("deadline", "tool_call: expires_at can only move while the call is pending",
         f"NEW.expires_at {ne} OLD.expires_at AND NOT (OLD.status = 'pending' AND NEW.status = 'pending')"),
        ("claim_once", "tool_call: the execution claim is written once, by approved -> running",
         f"{_changed(CLAIM, ne)} AND NOT (({CLAIMING}) AND {_unset(CLAIM)})"),
        ("claim_named", "tool_call: approved -> running must record the claim",
         f"({CLAIMING}) AND NEW.claimed_at IS NULL"),
        ("outcome_once", "tool_call: the outcome is written once, when a running or allowed call finishes",
         f"{_changed(OUTCOME, ne)} AND NOT ({OUTCOME_MOVE} AND {_unset(OUTCOME)})"),
        ("outcome_named", "tool_call: finishing a call must record its outcome as the new status",
         f"({FINISH}) AND (NEW.outcome_fingerprint IS NULL OR NEW.outcome_status {ne} NEW.status)"),
    ]


def _pg_function() -> str:
    checks = "\n".join(
        f"  IF {condition} THEN\n"
        f"    RAISE EXCEPTION '{message} (call %, % -> %)', OLD.id, OLD.status, NEW.status\n"
        f"      USING ERRCODE = 'check_violation';\n"
        f"  END IF;"
        for _name, message, condition in rules("IS DISTINCT FROM")
    )
    return f"""
    CREATE FUNCTION tool_call_guard() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      IF TG_OP <> 'UPDATE' THEN
        RAISE EXCEPTION 'tool_call rows are permanent: % rejected', TG_OP
          USING ERRCODE = 'insufficient_privilege';
      END IF;
    {checks}
      RETURN NEW;
    END; $$
    """


def _pg_guards() -> list[str]:
    return [
        _pg_function(),
        """CREATE TRIGGER tool_call_transitions BEFORE UPDATE OR DELETE ON tool_call
           FOR EACH ROW EXECUTE FUNCTION tool_call_guard()""",
        """CREATE TRIGGER tool_call_no_truncate BEFORE TRUNCATE ON tool_call
           FOR EACH STATEMENT EXECUTE FUNCTION tool_call_guard()""",
        # Fire even under session_replication_role = replica, or a superuser could bypass silently.
        "ALTER TABLE tool_call ENABLE ALWAYS TRIGGER tool_call_transitions",
        "ALTER TABLE tool_call ENABLE ALWAYS TRIGGER tool_call_no_truncate",
        "REVOKE DELETE, TRUNCATE, TRIGGER ON tool_call FROM PUBLIC",
    ]


def _sqlite_guards() -> list[str]:
    statements = [
        f"""CREATE TRIGGER tool_call_{name} BEFORE UPDATE ON tool_call WHEN {condition}
            BEGIN SELECT RAISE(ABORT, '{message}'); END"""
        for name, message, condition in rules("IS NOT")
    ]
    statements += [
        """CREATE TRIGGER tool_call_no_delete BEFORE DELETE ON tool_call
           BEGIN SELECT RAISE(ABORT, 'tool_call rows are permanent: DELETE rejected'); END""",
        """CREATE TRIGGER tool_call_no_overwrite BEFORE INSERT ON tool_call
           WHEN EXISTS (SELECT 1 FROM tool_call WHERE id = NEW.id)
           BEGIN SELECT RAISE(ABORT, 'tool_call rows are permanent: overwrite rejected'); END""",
    ]
    return statements


def _sqlite_trigger_names() -> list[str]:
    return [f"tool_call_{name}" for name, _m, _c in rules("IS NOT")] + ["tool_call_no_delete",
                                                                         "tool_call_no_overwrite"]


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    for statement in _pg_guards() if dialect == "postgresql" else _sqlite_guards():
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER tool_call_no_truncate ON tool_call")
        op.execute("DROP TRIGGER tool_call_transitions ON tool_call")
        op.execute("DROP FUNCTION tool_call_guard()")
    else:
        for name in _sqlite_trigger_names():
            op.execute(f"DROP TRIGGER {name}")
