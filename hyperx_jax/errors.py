"""Errors a user can fix from the message alone: the `hyperx` command prints them as one line.

A bad config (`config.ConfigError`), a bad data file (`data.sources.SourceError`), a bad
request to predict or export, a missing asset: each names what is wrong and where. Anything else
is a bug or a failure of the machine and keeps its traceback.
"""


class UserError(ValueError):
  """A mistake in what the user gave (config, data, arguments); the message says what and where."""
