"""The exceptions the CLI turns into one line: ``EraseError`` (exit status 2) and ``Interrupted``."""


class EraseError(Exception):
    """A problem with the user's input or environment, phrased as what is wrong and how to fix it.

    The CLI prints ``erase: error: <message>`` and exits with status 2, without a traceback. Raise it
    for anything a user can fix (a missing folder, an unknown concept, a non-positive step count);
    let genuine bugs propagate as ordinary exceptions.
    """


class Interrupted(Exception):
    """SIGTERM stopped a run after its last checkpoint was written; ``--resume`` goes on from there.

    Not an ``EraseError``: nothing was wrong with the input. The CLI exits with status 143.
    """
