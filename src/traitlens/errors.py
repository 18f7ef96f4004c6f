"""Errors that are the user's to fix: the CLI prints them without a traceback and exits 2."""


class TraitlensError(Exception):
    """A problem with the user's input or environment, explained in words they can act on."""

    exit_code = 2


class ConfigError(TraitlensError):
    """A study file that does not validate; carries every problem found, not just the first."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        noun = "problem" if len(problems) == 1 else "problems"
        lines = [f"{source}: {len(problems)} {noun}"] + [f"  - {p}" for p in problems]
        super().__init__("\n".join(lines))


class TraitlensWarning(UserWarning):
    """Something the user should know that does not stop the run; the CLI prints it as one line."""


class CheckpointWarning(TraitlensWarning):
    """A training checkpoint that cannot be trusted, so the adapter trains from the start."""


class TruncationWarning(TraitlensWarning):
    """Evaluation inputs longer than the model's context, cut to fit."""


class StoreLockedError(TraitlensError):
    """Another process holds the store's write lock."""
