"""``python -m hotpipe ...`` (and ``torchrun -m hotpipe ...``): the same as the ``hotpipe`` command."""

import sys

from hotpipe.cli import main

sys.exit(main())
