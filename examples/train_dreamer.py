"""Train DreamerV3 (preset ``ci``) on bundled CartPole; save, reload and check exact parity.

    python examples/train_dreamer.py [--dataset cartpole] [--steps 300] [--seed 0]
                                     [--device auto] [--out DIR] [--test]

Prints the held-out world-model loss before and after training, saves the model with
``save_pretrained`` (default ``runs/examples/dreamerv3`` in the repository; a temporary
directory with ``--test``), reloads it with ``worldflux.from_pretrained`` and exits non-zero
unless the reloaded model's held-out loss equals the trained model's exactly.
"""

from __future__ import annotations

import sys

from _common import run_example

if __name__ == "__main__":
    sys.exit(run_example("dreamerv3", "cartpole", __doc__))
