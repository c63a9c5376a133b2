"""`python -m rlhf_ledger.demo`."""

import sys

from rlhf_ledger.demo.run import main

sys.exit(main())
