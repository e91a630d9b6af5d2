"""`python -m mmtriton_harness.reliability`: the same as `mmtriton reliability`."""

import sys

from .command import main

sys.exit(main())
