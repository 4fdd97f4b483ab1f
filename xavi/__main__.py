"""Allow ``python -m xavi``."""

import sys

from xavi.main import main

sys.exit(main())
