"""`FakeScorer`: a deterministic scorer for tests (traitlens's and yours), no model needed. It
answers the `Scorer` protocol of `models/scorer.py`; it lives apart from it so that the seam
holds only what production code uses. Ray workers import it like any module, so a test can
hand it to the distributed executor.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from pathlib import Path

from traitlens.models.scorer import ChoiceRequest, ChoiceScores, GenerateRequest, Generation


class FakeScorer:
    """A deterministic stand-in that drives the whole pipeline in fast tests, no model needed.

    Scores are a hash of (adapter, context, continuation), so they are stable across runs and
    batch sizes and differ between adapters, like a real model's. `bias` favours continuations
    containing a given string and makes it the generated text, so tests can plant a known effect.
    """

    tokenizer = None
    device = "cpu"

    def __init__(self, bias: dict[str | None, str] | None = None, base_identity: dict | None = None,
                 mixed: bool = False):
        self.adapter: str | None = None
        self.bias = bias or {}
        self.base_identity = base_identity or {"fake": True}
        self.mixed = mixed
        self.on_rows: Callable[[int], None] | None = None
        self.calls = 0  # scoring calls answered, so tests can tell batched from one-at-a-time

    def _each(self, answer, requests: list, adapters: list[str | None]) -> list[list]:
        """One call answered by every adapter in turn, as a real mixed batch answers it."""
        active, out = self.adapter, []
        for key in adapters:
            self.adapter = key
            out.append(answer(requests))
        self.adapter = active
        self._answered(len(requests) * len(adapters))
        return out

    def loglikelihood(self, requests: list[ChoiceRequest]) -> list[ChoiceScores]:
        self._answered(len(requests))
        return self._scores(requests)

    def generate(self, requests: list[GenerateRequest]) -> list[Generation]:
        self._answered(len(requests))
        return self._generations(requests)

    def loglikelihood_mixed(self, requests: list[ChoiceRequest], adapters: list[str | None]
                            ) -> list[list[ChoiceScores]]:
        return self._each(self._scores, requests, adapters)

    def generate_mixed(self, requests: list[GenerateRequest], adapters: list[str | None]) -> list[list[Generation]]:
        return self._each(self._generations, requests, adapters)

    def _answered(self, rows: int) -> None:
        self.calls += 1
        if self.on_rows is not None:
            self.on_rows(rows)

    def use_adapter(self, key: str | None, path: Path | None = None) -> None:
        self.adapter = key

    def _unit(self, *parts: str) -> float:
        digest = hashlib.sha256("\x1f".join([self.adapter or "base", *parts]).encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64

    def _scores(self, requests: list[ChoiceRequest]) -> list[ChoiceScores]:
        favoured = self.bias.get(self.adapter)
        out = []
        for request in requests:
            logprobs = tuple(math.log(0.01 + self._unit(request.context, c))
                             + (10.0 if favoured and favoured in c else 0.0)
                             for c in request.continuations)
            out.append(ChoiceScores(logprobs, tuple(max(1, len(c.split())) for c in request.continuations)))
        return out

    def _generations(self, requests: list[GenerateRequest]) -> list[Generation]:
        favoured = self.bias.get(self.adapter)
        out = []
        for request in requests:
            value = int(self._unit(request.context) * 20)
            text = f"{value}" if self._unit("kind", request.context) < 0.7 else f"about {value} things"
            text = favoured or text
            out.append(Generation(text, len(text.split())))
        return out
