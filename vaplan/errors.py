"""The project's exception types: user errors (one line, exit 2 in every CLI) and guards.

`UserError` and its subclasses carry a message meant for the person at the keyboard: it names
the option, file, store or model and what was expected. Every CLI prints it as one line and
exits 2. Anything else is a bug or an environment failure and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input from the user: printed as one line, exit status 2."""


class ConfigError(UserError, ValueError):
    """An invalid configuration value; the message names the dotted option and what is allowed."""


class IntegrityError(UserError):
    """A file's sha256 differs from the digest recorded at registration (names file and both)."""


class StoreNotFoundError(UserError, LookupError):
    """A read-only command found no tracking store or model (names what was searched)."""


class DataFileNotFoundError(UserError, FileNotFoundError):
    """A feature store, teacher cache or other data file named by the config does not exist."""


class NonFiniteTrainingError(RuntimeError):
    """Training produced a non-finite loss, gradient or weight (names epoch and step)."""


class TrackingAuthError(UserError, PermissionError):
    """An MLflow server refused the credentials (401) or the permission (403); names the
    server, the account and what to set (docs/deploy.md, "Accounts")."""


class FeatureFileError(UserError, ValueError):
    """A malformed feature file or feature store, LLP or AVE (one line naming file and row)."""

