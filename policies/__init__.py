"""callgate's policy language: parse -> validate -> compile -> decide.

Pure: no file or network I/O and no imports of gateway, console or the SDK. The caller reads
files and passes ``(source name, text)`` pairs::

    policy_set = load_policy_sources([("policies/stripe.yaml", text)])   # PolicyValidationError
    policy = compile_policy(policy_set)                                  # once per version
    decision = policy.decide("stripe.issue_refund", {"amount": 850}, agent="billing-bot")
    decision.action, decision.rule, decision.reason, decision.approval_timeout_s
    policy.digest                                                        # version identity
"""

from .compile import CompiledPolicy, compile_policy
from .errors import Issue, PolicyError, PolicyValidationError
from .load import load_policy_sources, load_policy_text
from .model import Action, Decision, PolicySet
from .testing import TestFailure, run_policy_tests

__all__ = [
    "Action",
    "CompiledPolicy",
    "Decision",
    "Issue",
    "PolicyError",
    "PolicySet",
    "PolicyValidationError",
    "TestFailure",
    "compile_policy",
    "load_policy_sources",
    "load_policy_text",
    "run_policy_tests",
]
