"""`python -m rlhf_ledger.cli`: the same as the `rlhf-ledger` command."""

import sys

from rlhf_ledger.cli.main import main

sys.exit(main())
