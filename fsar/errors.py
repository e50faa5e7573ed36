"""The one base class of the errors a user can fix: the CLI prints their message on one line and exits 1."""


class FsarError(Exception):
    """Something about the input (a path, an option, a cache, a list) is wrong; the message says what to do.

    Every module's user-facing error derives from it (``CacheError``, ``EpisodeError``, ...), so that the
    command line catches one type, and a new module's error needs no change there.
    """
