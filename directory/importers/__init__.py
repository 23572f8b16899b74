"""Importers of the national open-data files (activity, MSSanté) and of LDIF.

`formats` is sans-IO (headers, encodings, line parsing and mapping); `run` streams a file
through it and writes batches to the database. See docs/directory.md.
"""

from directory.importers.formats import FormatError, Rejected, detect_kind
from directory.importers.run import ImportReport, import_file, sniff

__all__ = ["FormatError", "ImportReport", "Rejected", "detect_kind", "import_file", "sniff"]
