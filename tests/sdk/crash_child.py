"""Child process for the crash test: record events, report that the calls returned, wait to be killed."""

import sys
import time

from rlhf_ledger.core.keys import Signer
from rlhf_ledger.sdk import HttpSink, Run

seed, url, spool, n = bytes.fromhex(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
signer = Signer.from_seed(seed)
run = Run(log_id="log-c", run_id="run-crash", signer=signer, sink=HttpSink(url, "tok", "log-c"), method="ppo",
          hyperparameters={"lr": 1e-6}, base_model={"name": "m", "weights_digest": "sha256:" + "0" * 64},
          spool_dir=spool, backoff_base=0.01, backoff_max=0.05)
run.start()
for i in range(n):
    run.policy_update(i, 1.0 / (i + 1), 0.01, 0.1, 0.01, 1.0, param_delta_norm=0.0)
    if i == n // 2:
        time.sleep(0.3)  # let part of the run be delivered and acknowledged before the crash
print("RETURNED", n, flush=True)
time.sleep(60)  # the parent kills us with SIGKILL long before this ends
