"""Writes the PeleeNet expected-output file beside it, once, from the reference code.

    git clone https://github.com/Robert-JunWang/PeleeNet /tmp/PeleeNet
    git -C /tmp/PeleeNet checkout 05e928a
    python tests/expected/peleenet/generate.py /tmp/PeleeNet/peleenet.py

The reference's ``PeleeNet()`` made with torch.manual_seed(0) (its constructor draws
torch's default initialisation, then its own ``_initialize_weights``), its state_dict's
keys and shapes, its parameter count, and its outputs on a seeded input in eval mode and
in train mode (dropout drawn after torch.manual_seed(1)), with the running statistics
after that train forward. tests/test_peleenet.py builds the zoo spec with seed=0 and must
reproduce every one of them.
"""

import importlib.util
import json
import platform
import subprocess
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


def sample_input() -> torch.Tensor:
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))


def main(reference: str) -> None:
    spec = importlib.util.spec_from_file_location("peleenet", reference)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    commit = subprocess.run(["git", "-C", str(Path(reference).parent), "rev-parse", "HEAD"],
                            capture_output=True, text=True).stdout.strip() or "unknown"
    x = sample_input()
    torch.manual_seed(0)
    net = module.PeleeNet()
    state = net.state_dict()
    net.eval()
    with torch.no_grad():
        eval_out = net(x)
    net.train()
    torch.manual_seed(1)
    with torch.no_grad():
        train_out = net(x)
    stats = sum(v.double().sum().item() for k, v in net.state_dict().items()
                if k.endswith(("running_mean", "running_var")))
    record = {
        "provenance": {
            "repository": "https://github.com/Robert-JunWang/PeleeNet", "commit": commit,
            "file": "peleenet.py", "constructor": "PeleeNet()",
            "made_by": "tests/expected/peleenet/generate.py (torch.manual_seed(0) before the "
                       "constructor; input torch.randn(2, 3, 64, 64) from "
                       "Generator().manual_seed(0); train mode after torch.manual_seed(1))",
            "torch": torch.__version__, "python": platform.python_version()},
        "params": sum(p.numel() for p in net.parameters()),
        "keys": [[k, list(v.shape)] for k, v in state.items()],
        "eval_output": eval_out.tolist(),
        "train_output": train_out.tolist(),
        "running_stats_sum": stats}
    (HERE / "peleenet.json").write_text(json.dumps(record) + "\n")
    print("peleenet", record["params"])


if __name__ == "__main__":
    main(sys.argv[1])
