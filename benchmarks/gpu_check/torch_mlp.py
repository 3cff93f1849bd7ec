"""A PyTorch MLP on synthetic data: checks hpc_hpo's GPU binding on real hardware (no TF there)."""
import os
import time

import torch

torch.backends.cuda.matmul.allow_tf32 = True


def objective(params, trial):
    t0 = time.time()
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    frac = float(os.environ.get("HPC_HPO_GPU_MEMORY_FRACTION", "1"))
    if dev == "cuda" and frac < 1:
        torch.cuda.set_per_process_memory_fraction(frac)
    g = torch.Generator().manual_seed(trial.seed % 2**31)
    n, d = 50_000, 256
    x = torch.randn(n, d, generator=g)
    w = torch.randn(d, 10, generator=g)
    y = (x @ w).argmax(1)
    x, y = x.to(dev), y.to(dev)
    width = int(params["width"])
    model = torch.nn.Sequential(torch.nn.Linear(d, width), torch.nn.ReLU(), torch.nn.Dropout(params["dropout"]),
                                torch.nn.Linear(width, width), torch.nn.ReLU(),
                                torch.nn.Linear(width, 10)).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=params["lr"])
    bs = int(params["batch_size"])
    for epoch in range(int(params["epochs"])):
        perm = torch.randperm(n, device=dev)
        for i in range(0, n, bs):
            idx = perm[i:i + bs]
            loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        trial.report(epoch, {"loss": float(loss)})
    with torch.no_grad():
        acc = float((model(x).argmax(1) == y).float().mean())
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>")
    print("device", dev, "CUDA_VISIBLE_DEVICES", visible, torch.cuda.get_device_name(0) if dev == "cuda" else "cpu")
    return {"value": acc, "on_gpu": float(dev == "cuda"),
            "cuda_visible": float(visible) if visible.lstrip("-").isdigit() else -9.0,
            "n_visible": torch.cuda.device_count(), "fraction": frac,
            "peak_mb": torch.cuda.max_memory_allocated() / 2**20 if dev == "cuda" else 0.0,
            "threads": torch.get_num_threads(), "seconds": time.time() - t0}
