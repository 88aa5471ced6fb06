"""The one exception the CLI turns into a one-line message and exit status 2."""


class EraseError(Exception):
    """A problem with the user's input or environment, phrased as what is wrong and how to fix it.

    The CLI prints ``erase: error: <message>`` and exits with status 2, without a traceback. Raise it
    for anything a user can fix (a missing folder, an unknown concept, a non-positive step count);
    let genuine bugs propagate as ordinary exceptions.
    """
