"""The env's small exception hierarchy. Malformed *actions* never raise: they become
observations. These errors are for the caller's mistakes (API order, bad config, bad data files).
"""

from __future__ import annotations


class EnvError(Exception):
    """Base class of every error the env package raises on purpose."""


class ResetNeededError(EnvError, RuntimeError):
    """``step`` was called before ``reset`` or after the episode ended (there is no auto-reset)."""


class ConfigError(EnvError, ValueError):
    """An env or evaluation setting is invalid; the message names the setting and the fix."""


class TaskFormatError(EnvError, ValueError):
    """A QA data file cannot be read; the message names the file, the line and what was expected."""


class PolicyError(EnvError):
    """The policy endpoint answered with an error or with something that is not a completion."""
