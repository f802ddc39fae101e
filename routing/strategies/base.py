"""The base class of routing strategies, and what they are given.

A strategy orders the eligible deployments of the requested model; the router tries them
in that order (fallback). One method to override: ``choose``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from accounts.keycache import KeyInfo
from routing.config.snapshot import DeploymentInfo, RuleInfo, Snapshot


@dataclass
class RouteRequest:
    """One client request as routing sees it."""

    model: str
    body: dict[str, Any]
    stream: bool
    key: KeyInfo
    snapshot: Snapshot
    headers: Mapping[str, str] = field(default_factory=dict)  # lower-case names
    dry_run: bool = False  # explain: rank without changing any strategy state (round-robin position)
    # The API called: "chat" (/v1/chat/completions), "messages" (/v1/messages, ``body`` is its
    # OpenAI translation) or "embeddings" (/v1/embeddings). Chat and messages use chat deployments.
    endpoint: str = "chat"
    rule: RuleInfo | None = None  # the routing rule that applies, set by ``custom`` before its inner strategy ranks
    _input_tokens: tuple[int, str] | None = field(default=None, repr=False)

    @property
    def metadata(self) -> dict[str, Any]:
        metadata = self.body.get("metadata")
        return metadata if isinstance(metadata, dict) else {}

    def input_tokens(self) -> tuple[int, str]:
        """Estimated input tokens and the tokenizer that counted them (computed once)."""
        if self._input_tokens is None:
            if self.endpoint == "embeddings":
                from usage.tokens import count_embedding_tokens

                self._input_tokens = count_embedding_tokens(self.model, self.body.get("input"))
            else:
                from usage.tokens import count_input_tokens

                self._input_tokens = count_input_tokens(self.model, self.body)
        return self._input_tokens

    @property
    def serves(self) -> str:
        """The deployment endpoint this request needs: ``embeddings`` or ``chat``."""
        return "embeddings" if self.endpoint == "embeddings" else "chat"

    def expected_output_tokens(self) -> int:
        if self.endpoint == "embeddings":
            return 0
        from usage.tokens import expected_output_tokens

        return expected_output_tokens(self.body)


@dataclass
class Ranking:
    """Deployments in the order to try them, with why, and per-deployment scores for explain."""

    candidates: list[DeploymentInfo]
    reason: str = ""
    scores: dict[str, dict[str, Any]] = field(default_factory=dict)
    rule: RuleInfo | None = None
    strategy: str = ""


class Strategy(ABC):
    name: ClassVar[str]
    description: ClassVar[str] = ""

    @abstractmethod
    def choose(self, request: RouteRequest, candidates: Sequence[DeploymentInfo]) -> Ranking:
        """Order ``candidates`` (never empty) for ``request``; the first is tried first."""
