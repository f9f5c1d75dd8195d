"""One base for every error that bad input causes, so the orchestrator can show it as one clear line."""


class InputError(Exception):
    """Bad input a user can fix (config, data, model path, address): the message is one line, no traceback needed."""
