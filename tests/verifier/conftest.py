import sys
from pathlib import Path

# Tests of the verifier package (verifier/rlhf_verifier). They live outside verifier/ because
# some build bundles with the ledger (agreement tests), and nothing under verifier/ may import it.
# The bundle factory lives beside the tests.
HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))
