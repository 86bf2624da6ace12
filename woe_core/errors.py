"""The error classes of woe_core.

Every error a user can cause is a ``WoeError``: its message names the offending
value and what is allowed, so the CLI prints it and the app shows it as is.
"""

from __future__ import annotations


class WoeError(Exception):
    """Base class of every error woe_core raises on purpose."""


class InvalidParameter(WoeError, ValueError):
    """A parameter is outside its declared constraints (nothing was read or written)."""


class DatabaseConfigError(WoeError):
    """The database URL or data folder is not usable as given."""


class DatabaseUnavailable(WoeError):
    """The configured PostgreSQL server could not be reached."""


class MigrationError(WoeError):
    """A versioned SQL script is malformed, missing or was edited after it was applied."""


class ContractError(WoeError):
    """A feature store lacks a contract column or has one of the wrong type."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("feature-store contract violated: " + "; ".join(self.problems))


class CertificationRequired(WoeError):
    """The database refused to serve data whose certification is missing, failed or stale."""


class NotFound(WoeError):
    """A model, listing or dataset that was asked for does not exist."""


class PromotionRefused(WoeError):
    """The database refused a promotion, rollback or deletion that model governance forbids."""


class LockBusy(WoeError):
    """A project lock (promotion, training, or a dataset's sources) stayed held longer than the bounded wait."""


class GovernanceRefused(WoeError):
    """The database refused to change governed data (an immutable model, the certification record)."""


class OutOfResources(WoeError):
    """Disk space or memory ran out, or would run out, for a job (the message names which, where and how much)."""


class CitusRequired(WoeError):
    """A command that needs a Citus coordinator ran against a server or database without one."""
