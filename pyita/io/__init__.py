"""Reading structures from whatever users have: generate.in, XSF folders/globs, ASE files, bundled samples.

``open_source`` names the data without reading it; iterating the returned source streams structures one by
one, so memory stays flat however many files a data set holds.
"""

from pyita.io.archives import archive_members
from pyita.io.generate_in import read_generate_in
from pyita.io.names import match_names, read_name_list
from pyita.io.sources import DataSource, check_labels, open_source, read_structures
from pyita.io.xsf import read_xsf
from pyita.io.xsf_write import write_xsf

__all__ = ["DataSource", "open_source", "read_structures", "read_xsf", "write_xsf", "read_generate_in",
           "check_labels", "archive_members", "match_names", "read_name_list"]
