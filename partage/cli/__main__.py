"""`python -m partage.cli ...`: the same as the `partage` command."""

import sys

from .main import main

sys.exit(main())
