"""`python -m xdlib.deploy`, the same as `xdlib deploy`: the deployment benchmark (`make deploy`; xdlib/deploy/deploy.py)."""

import sys

from .deploy import main

sys.exit(main())
