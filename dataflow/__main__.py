"""``python -m dataflow``: the ``dataflow`` console script (``dataflow/cli.py``)."""

import sys

from dataflow.cli import main

sys.exit(main())
