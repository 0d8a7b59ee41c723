"""`python -m federation.demo`: see federation.demo."""

import sys

from federation.demo import main

sys.exit(main())
