"""`python -m kubenova.console`: the console server (`server.main`)."""

import sys

from kubenova.console.server import main

sys.exit(main())
