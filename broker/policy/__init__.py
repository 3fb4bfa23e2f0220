"""The broker's policy (ICD §9 `policy.toml`): the model, loaded fail-closed, rendered, watched, and
edited by the administrator's commands.

    model       the immutable model (`Policy`, `Sender`, `Operator`, ...), `PolicySource`
    loader      `load_policy`, `parse_policy`: every rule, errors naming the line (`toml_text.Locator`)
    render      `render_policy`, `write_policy`
    holder      `PolicyHolder`: the policy in force, swapped whole when the file changes
    admin       what `broker keys` does to policy.toml (senders, operators, keys)
    defaults    the default policy and identities `broker up` makes in a new state folder
"""

from broker.policy.holder import PolicyHolder
from broker.policy.loader import load_policy, parse_policy
from broker.policy.model import Operator, Organisation, Policy, PolicySource, Sender, SigningKey
from broker.policy.render import render_policy, write_policy

__all__ = [
    "Operator",
    "Organisation",
    "Policy",
    "PolicyHolder",
    "PolicySource",
    "Sender",
    "SigningKey",
    "load_policy",
    "parse_policy",
    "render_policy",
    "write_policy",
]
