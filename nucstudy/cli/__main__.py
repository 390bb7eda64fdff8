"""``python -m nucstudy.cli`` (e.g. under ``torchrun``): the ``nucstudy`` command."""

import sys

from nucstudy.cli.main import main

sys.exit(main())
