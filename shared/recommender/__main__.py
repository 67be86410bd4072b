"""`python -m recommender` runs the command line."""

import sys

from recommender.cli import main

sys.exit(main())
