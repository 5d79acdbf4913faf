"""Errors a user can fix (a bad flag, config, data or model folder): one clear line and exit code 2."""


class UsageError(ValueError):
    pass
