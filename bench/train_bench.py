"""Training throughput and peak memory of the fusion models at demo and paper sizes.

    python bench/train_bench.py                       # demo and paper sizes, every model, CPU (and CUDA if present)
    python bench/train_bench.py --sizes demo --models memf cmmt --device cpu --steps 10

Each (model, size, device) runs in a fresh subprocess so its peak memory is its own: on the CPU the process's peak
resident set (``ru_maxrss``), on CUDA ``torch.cuda.max_memory_allocated``. Inputs are a synthetic padded batch with
the demo's shapes (8 items, 5 clips, 32-d text, video and audio from the tiny models, ResNet18 512-d images) and the
model options of config.yaml's ``model`` section, or the paper's shapes (BERT 768-d text, ResNet50 2048-d images,
VideoMAE 768-d video, wav2vec2 768-d audio) and options (``memf.models.PAPER_OPTIONS``). Samples/s counts streams through forward,
backward and an Adam step, after warm-up steps.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml

from memf.models import MODELS, PAPER_OPTIONS, build_model

CONFIG = Path(__file__).resolve().parents[1] / "config.yaml"
#: Size name -> (model options, input dims of text, image, video, audio).
SIZES = {
    "demo": (yaml.safe_load(CONFIG.read_text())["model"], {"dt": 32, "di": 512, "dv": 32, "da": 32}),
    "paper": (PAPER_OPTIONS, {"dt": 768, "di": 2048, "dv": 768, "da": 768}),
}
FIELDS = {"anchor": (4, 1, 8), "commodity": (5, 1, 2), "room": (2, 1, 1)}  # text, image, numeric fields (paper Tables 1-3)
ITEMS, CLIPS = 8, 5


def synthetic_batch(n: int, dt: int, di: int, dv: int, da: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """A padded batch of ``n`` streams with about half the items and clips real."""
    g = torch.Generator().manual_seed(seed)
    batch: dict[str, torch.Tensor] = {}
    for entity in ("anchor", "room"):
        lt, li, ln = FIELDS[entity]
        batch[f"{entity}/text"] = torch.randn(n, lt, dt, generator=g)
        batch[f"{entity}/image"] = torch.randn(n, li, di, generator=g)
        batch[f"{entity}/numeric"] = torch.randn(n, ln, generator=g)
    lt, li, ln = FIELDS["commodity"]
    batch["commodity/text"] = torch.randn(n, ITEMS, lt, dt, generator=g)
    batch["commodity/image"] = torch.randn(n, ITEMS, li, di, generator=g)
    batch["commodity/numeric"] = torch.randn(n, ITEMS, ln, generator=g)
    batch["commodity/mask"] = torch.arange(ITEMS)[None] < torch.randint(1, ITEMS + 1, (n, 1), generator=g)
    for kind, d in (("video", dv), ("audio", da)):
        batch[f"{kind}/x"] = torch.randn(n, CLIPS, d, generator=g)
        batch[f"{kind}/mask"] = torch.arange(CLIPS)[None] < torch.randint(1, CLIPS + 1, (n, 1), generator=g)
    return batch


def one(model_name: str, size: str, device: str, batch_size: int, steps: int, warmup: int) -> dict[str, object]:
    """Time ``steps`` training steps of one model at one size on one device (in this process)."""
    torch.manual_seed(0)
    options, dims = SIZES[size]
    batch = {k: v.to(device) for k, v in synthetic_batch(batch_size, **dims).items()}
    y = torch.randn(batch_size, device=device)
    model = build_model(model_name, {k: tuple(v.shape[1:]) for k, v in batch.items()}, **options).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats(device)

    def step() -> None:
        loss = torch.nn.functional.mse_loss(model(batch).pred, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(warmup):
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    for _ in range(steps):
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - started
    peak = (
        torch.cuda.max_memory_allocated(device) / 2**20
        if device.startswith("cuda")
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    )
    return {
        "model": model_name, "size": size, "device": device, "batch_size": batch_size,
        "parameters": sum(p.numel() for p in model.parameters()),
        "samples_per_s": round(steps * batch_size / seconds, 1), "peak_mib": round(peak, 1),
        "peak_kind": "cuda allocated" if device.startswith("cuda") else "process max RSS",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--device", nargs="+", default=None, help="default: cpu, plus cuda when available")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.one:
        print(json.dumps(one(args.models[0], args.sizes[0], args.device[0], args.batch_size, args.steps, args.warmup)))
        return
    devices = args.device or (["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    print(f"{'model':<22}{'size':<7}{'device':<8}{'params':>12}{'samples/s':>12}{'peak MiB':>11}  peak of")
    for device in devices:
        for size in args.sizes:
            for name in args.models:
                cmd = [sys.executable, __file__, "--one", "--models", name, "--sizes", size, "--device", device,
                       "--batch-size", str(args.batch_size), "--steps", str(args.steps), "--warmup", str(args.warmup),
                       "--threads", str(args.threads)]
                done = subprocess.run(cmd, capture_output=True, text=True)
                if done.returncode != 0:
                    print(f"{name:<22}{size:<7}{device:<8} failed: {done.stderr.strip().splitlines()[-1]}")
                    continue
                r = json.loads(done.stdout.strip().splitlines()[-1])
                print(f"{r['model']:<22}{r['size']:<7}{r['device']:<8}{r['parameters']:>12,}{r['samples_per_s']:>12}"
                      f"{r['peak_mib']:>11}  {r['peak_kind']}")


if __name__ == "__main__":
    main()
