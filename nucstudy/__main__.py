"""``python -m nucstudy``: the same as the ``nucstudy`` command."""

import sys

from nucstudy.cli import main

sys.exit(main())
