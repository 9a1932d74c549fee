"""The errors a stage reports as one line and exit code 2 (``mammoflow.cli.main``), in a module that imports
nothing: the command line catches them without importing the decoder (pydicom, pandas) for every job."""


class DataError(Exception):
    """Bad input data set (not a single bad image): the run cannot go on."""


class FoldError(ValueError):
    """The folds cannot be made as asked (too few patients or positives, a protocol's requirement)."""


class DiskFullError(Exception):
    """A write found no space left on its disk; the message names the file."""
