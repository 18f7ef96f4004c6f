"""The one seam between targets and models: a scorer answers two kinds of request.

Targets build requests and score the answers; scorers only answer. Choices that share a context
travel in one request, so a scorer can compute the context once for all of them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class ChoiceRequest:
    """Log-likelihood of each continuation after `context`."""

    context: str
    continuations: tuple[str, ...]


@dataclass(frozen=True)
class ChoiceScores:
    logprobs: tuple[float, ...]  # summed over each continuation's tokens
    tokens: tuple[int, ...]  # each continuation's length in tokens, for length normalisation


@dataclass(frozen=True)
class GenerateRequest:
    """Greedy continuation of `context`, cut at the first stop string."""

    context: str
    max_new_tokens: int
    stop: tuple[str, ...]


@dataclass(frozen=True)
class Generation:
    text: str
    tokens: int  # generated tokens up to the stop string


class Scorer(Protocol):
    tokenizer: object | None  # for chat templates; None when the scorer has no tokenizer
    # Whether executors should send one target's models together (`*_mixed`) rather than one
    # model at a time: the scorer knows which is faster on its device.
    mixed: bool
    device: object  # where it computes (a torch.device, or "cpu"): recorded with every cell it scores
    on_rows: Callable[[int], None] | None  # called with the rows each batch answered (progress)

    def use_adapter(self, key: str | None, path: Path | None = None) -> None:
        """Answer with this adapter from now on (None: the base alone); loads it once."""

    def loglikelihood(self, requests: list[ChoiceRequest]) -> list[ChoiceScores]: ...

    def generate(self, requests: list[GenerateRequest]) -> list[Generation]: ...

    def loglikelihood_mixed(self, requests: list[ChoiceRequest], adapters: list[str | None]
                            ) -> list[list[ChoiceScores]]:
        """`requests` answered by each loaded adapter (None: the base), one list per adapter."""

    def generate_mixed(self, requests: list[GenerateRequest], adapters: list[str | None]) -> list[list[Generation]]: ...
