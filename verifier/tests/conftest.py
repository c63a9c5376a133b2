import sys
from pathlib import Path

# The verifier is its own package (verifier/rlhf_verifier); the factory lives beside the tests.
HERE = Path(__file__).resolve().parent
for p in (HERE, HERE.parent):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))
