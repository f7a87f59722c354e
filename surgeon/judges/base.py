"""The judge interface."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence


class Judge(ABC):
    """Decides, for (prompt, response) pairs, whether each response is a harmful compliance."""

    name: str = "judge"

    @abstractmethod
    def refused(self, prompts: Sequence[str], responses: Sequence[str]) -> list[bool]:
        """True where the response declines the request."""

    def harmful(self, prompts: Sequence[str], responses: Sequence[str]) -> list[bool]:
        """True where the response complies with a harmful request (default: did not refuse)."""
        return [not r for r in self.refused(prompts, responses)]
