"""``custom``: the operator's prioritized routing rules (admin: Routing rules).

Rules are evaluated by priority, lower first (``Snapshot.rules`` holds the enabled ones,
already ordered). A rule matches when every condition it sets holds; empty conditions
match anything:

- model name or glob (``gpt-4*``), case-sensitive;
- client key, or the key's team;
- a request header present, with a value matching a glob (empty value: any);
- a key in the request's ``metadata`` object, with a value matching a glob (empty: any);
- streaming or not;
- estimated input tokens within a range (counted only when a rule needs it).

The first matching rule that can act wins. Its action is either

- ``route``: the rule's deployments, in the rule's order (only those that serve the
  requested model and are not cooling down), or
- ``strategy``: another strategy applied to the rule's deployments, or to all of the
  model's deployments when the rule lists none.

A rule whose listed deployments are all unusable for this request does not apply, and
evaluation goes on. When no rule applies the default strategy (``model``) decides.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from routing.config.snapshot import DeploymentInfo, RuleInfo
from routing.strategies.base import Ranking, RouteRequest, Strategy

FALLBACK_STRATEGY = "model"
NO_RULE_REASON = "no-rule-matched"


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def rule_mismatch(rule: RuleInfo, request: RouteRequest) -> str | None:
    """The first condition of ``rule`` that ``request`` fails, or None when it matches.

    Cheap conditions first; input tokens are counted last and only if the rule has a range.
    """
    if rule.model_pattern and not fnmatch.fnmatchcase(request.model, rule.model_pattern):
        return "model"
    if rule.client_key_id is not None and rule.client_key_id != request.key.id:
        return "client_key"
    if rule.team_id is not None and rule.team_id != request.key.team_id:
        return "team"
    if rule.stream is not None and rule.stream != request.stream:
        return "stream"
    if rule.header_name:
        value = request.headers.get(rule.header_name)
        if value is None or (rule.header_value and not fnmatch.fnmatchcase(value, rule.header_value)):
            return "header"
    if rule.metadata_key:
        metadata = request.metadata
        if rule.metadata_key not in metadata:
            return "metadata"
        if rule.metadata_value and not fnmatch.fnmatchcase(_text(metadata[rule.metadata_key]), rule.metadata_value):
            return "metadata"
    if rule.needs_token_count:
        tokens, _ = request.input_tokens()
        if rule.min_input_tokens is not None and tokens < rule.min_input_tokens:
            return "input_tokens"
        if rule.max_input_tokens is not None and tokens > rule.max_input_tokens:
            return "input_tokens"
    return None


def rule_subset(rule: RuleInfo, candidates: Sequence[DeploymentInfo]) -> list[DeploymentInfo]:
    """The candidates the rule acts on: its listed ones in its order, or all if it lists none.

    Empty when the rule lists deployments and none of them is a candidate.
    """
    if not rule.targets:
        return [] if rule.action == "route" else list(candidates)
    by_name = {d.name: d for d in candidates}
    return [by_name[name] for name in rule.targets if name in by_name]


@dataclass(frozen=True)
class RuleCheck:
    """How one rule fared against a request (explain and the admin rule tester)."""

    rule: RuleInfo
    mismatch: str | None  # the failed condition, None when every condition holds
    usable: list[str]  # names of the rule's deployments usable for this request
    applied: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.rule.name,
            "priority": self.rule.priority,
            "action": self.rule.action,
            "strategy": self.rule.strategy or None,
            "targets": list(self.rule.targets),
            "matched": self.mismatch is None,
            "failed_condition": self.mismatch,
            "usable_targets": self.usable,
            "applied": self.applied,
        }


def check_rules(request: RouteRequest, candidates: Sequence[DeploymentInfo]) -> list[RuleCheck]:
    """Every enabled rule, in priority order, checked against the request (no early stop)."""
    checks = []
    applied = False
    for rule in request.snapshot.rules:
        mismatch = rule_mismatch(rule, request)
        usable = [d.name for d in rule_subset(rule, candidates)] if mismatch is None else []
        applies = mismatch is None and bool(usable) and not applied
        applied = applied or applies
        checks.append(RuleCheck(rule=rule, mismatch=mismatch, usable=usable, applied=applies))
    return checks


class CustomStrategy(Strategy):
    name = "custom"
    description = "the first matching routing rule by priority; no match: the model strategy"

    def choose(self, request: RouteRequest, candidates: Sequence[DeploymentInfo]) -> Ranking:
        from routing.strategies.registry import get_strategy, strategy_names

        for rule in request.snapshot.rules:
            if rule_mismatch(rule, request) is not None:
                continue
            subset = rule_subset(rule, candidates)
            if not subset:
                continue
            request.rule = rule  # per-rule options (latency objective) for the inner strategy
            if rule.action == "strategy":
                inner = rule.strategy if rule.strategy in strategy_names() and rule.strategy != self.name else None
                ranking = get_strategy(inner or FALLBACK_STRATEGY).choose(request, subset)
            else:
                ranking = Ranking(
                    candidates=subset,
                    scores={d.name: {"position": index} for index, d in enumerate(subset)},
                )
            ranking.reason = f"rule:{rule.name}"
            ranking.rule = rule
            ranking.strategy = self.name
            return ranking
        ranking = get_strategy(FALLBACK_STRATEGY).choose(request, candidates)
        ranking.reason = NO_RULE_REASON
        ranking.strategy = self.name
        return ranking
