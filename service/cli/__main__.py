"""`python -m asen_search.service.cli` = `asen`."""

import sys

from asen_search.service.cli.main import main

sys.exit(main())
