"""Train TD-MPC2 (preset ``ci``) on bundled Pendulum; save, reload and check exact parity.

    python examples/train_tdmpc2.py [--dataset pendulum] [--steps 300] [--seed 0]
                                    [--device auto] [--out DIR] [--test]

Prints the held-out world-model loss before and after training, saves the model with
``save_pretrained`` (default ``runs/examples/tdmpc2`` in the repository; a temporary directory
with ``--test``), reloads it with ``worldflux.from_pretrained`` and exits non-zero unless the
reloaded model's held-out loss equals the trained model's exactly. On a discrete data set
(``--dataset cartpole``) the model is built with ``discrete_actions=True``.
"""

from __future__ import annotations

import sys

from _common import run_example

if __name__ == "__main__":
    sys.exit(run_example("tdmpc2", "pendulum", __doc__))
