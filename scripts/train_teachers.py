"""Train the embedded teachers that ship inside the package. Re-runnable and resumable.

    python scripts/train_teachers.py digits            # DCGAN on scikit-learn digits + digit classifier
    python scripts/train_teachers.py photo --steps N   # ResNet restoration teacher on bundled photos

Checkpoints go to scratch/teachers/NAME/ (resume by re-running the same command); the shipped
files (fp16 safetensors, model.json with measured quality, sample grid) to
edgedistill/models/embedded/NAME/. Losses are logged as JSON lines.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import linalg
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from edgedistill.core.atomic import write_atomic, write_text_atomic
from edgedistill.data.bundled import (
    bundled_photos,
    center_crop,
    degrade,
    digits_images,
    random_crops,
)
from edgedistill.data.imageio import save_grid
from edgedistill.models import create, spec_for_family
from edgedistill.models.weights import save_weights

ROOT = Path(__file__).resolve().parents[1]
SCRATCH = ROOT / "scratch" / "teachers"
EMBEDDED = ROOT / "edgedistill" / "models" / "embedded"


def log(path: Path, **row: object) -> None:
    line = json.dumps(row)
    print(line, flush=True)
    with path.open("a") as f:
        f.write(line + "\n")


def save_ckpt(path: Path, **state: object) -> None:
    write_atomic(path, lambda p: torch.save(state, p))


def load_ckpt(path: Path) -> dict | None:
    return torch.load(path, weights_only=True) if path.exists() else None


def last_losses(path: Path, model: str, keys: tuple[str, ...]) -> dict:
    """The last logged losses of `model` (a resumed, already finished run has none in memory)."""
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    last = [r for r in rows if r.get("model") == model and all(k in r for k in keys)][-1]
    return {k: last[k] for k in keys}


def lr_at(step: int, steps: int, base: float) -> float:
    """Constant, then linear decay to 0 over the last 40 % (pix2pix's schedule)."""
    start = int(0.6 * steps)
    return base if step < start else base * (steps - step) / (steps - start)


# ------------------------------------------------------------------------------------------ digits
def frechet(a: np.ndarray, b: np.ndarray) -> float:
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def train_classifier(out: Path, logf: Path, epochs: int) -> torch.nn.Module:
    torch.manual_seed(0)
    x, y = digits_images("train")
    xt, yt = digits_images("heldout")
    net = create("digit_classifier")
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    # cosine to zero: with heavy augmentation a constant rate leaves BatchNorm's stats jumpy at the end
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * math.ceil(len(x) / 64))
    for epoch in range(epochs):
        net.train()
        for idx in torch.randperm(len(x)).split(64):
            xb = x[idx]
            shift = torch.randint(-2, 3, (2,))  # small translations: the generator's digits wander
            xb = torch.roll(xb, (int(shift[0]), int(shift[1])), dims=(2, 3))
            # generated digits are not saturated at exactly -1/1 and carry a little noise: a feature net
            # that has never seen that sorts them all into one class
            n = len(xb)
            gain, offset = 0.75 + 0.35 * torch.rand(n, 1, 1, 1), 0.25 * (torch.rand(n, 1, 1, 1) - 0.5)
            xb = (xb * gain + offset + 0.05 * torch.rand(n, 1, 1, 1) * torch.randn_like(xb)).clamp(-1, 1)
            loss = F.cross_entropy(net(xb), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        net.eval()
        with torch.no_grad():
            acc = (net(xt).argmax(1) == yt).float().mean().item()
        log(logf, model="classifier", epoch=epoch, loss=round(loss.item(), 4), heldout_acc=round(acc, 4))
    save_weights(net, out / "classifier.safetensors")
    meta = {"family": "digit_classifier", "kwargs": {"width": 32, "feature_dim": 64}, "heldout_accuracy": acc}
    write_text_atomic(out / "classifier.json", json.dumps(meta, indent=2) + "\n")
    return net


def train_digits(steps: int, batch: int) -> None:
    name = "digits-dcgan"
    work, out = SCRATCH / name, EMBEDDED / name
    work.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    logf = work / "log.jsonl"
    g_kw = {"nz": 64, "ngf": 64, "nc": 1, "image_size": 32}
    d_kw = {"nc": 1, "ndf": 64, "image_size": 32, "sigmoid": False}
    G, D = create("dcgan", **g_kw), create("dcgan_d", **d_kw)
    opt_g = torch.optim.Adam(G.parameters(), 2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), 2e-4, betas=(0.5, 0.999))
    real, _ = digits_images("train")
    gen = torch.Generator().manual_seed(0)
    step, t0 = 0, time.time()
    if ck := load_ckpt(work / "ckpt.pt"):
        G.load_state_dict(ck["G"]), D.load_state_dict(ck["D"])
        opt_g.load_state_dict(ck["opt_g"]), opt_d.load_state_dict(ck["opt_d"])
        gen.set_state(ck["rng"])
        step = ck["step"]
        print(f"resumed {name} at step {step}")
    fixed_z = torch.randn(64, g_kw["nz"], 1, 1, generator=torch.Generator().manual_seed(1))
    while step < steps:
        for opt in (opt_g, opt_d):
            for group in opt.param_groups:
                group["lr"] = lr_at(step, steps, 2e-4)
        xb = real[torch.randint(len(real), (batch,), generator=gen)]
        z = torch.randn(batch, g_kw["nz"], 1, 1, generator=gen)
        fake = G(z)
        d_loss = F.softplus(-D(xb)).mean() + F.softplus(D(fake.detach())).mean()
        opt_d.zero_grad()
        d_loss.backward()
        opt_d.step()
        g_loss = F.softplus(-D(fake)).mean()  # non-saturating
        opt_g.zero_grad()
        g_loss.backward()
        opt_g.step()
        step += 1
        if step % 100 == 0 or step == steps:
            log(logf, model=name, step=step, d_loss=round(d_loss.item(), 4), g_loss=round(g_loss.item(), 4),
                s_per_step=round((time.time() - t0) / 100, 4))  # fmt: skip
            t0 = time.time()
        if step % 500 == 0 or step == steps:
            save_ckpt(work / "ckpt.pt", G=G.state_dict(), D=D.state_dict(), opt_g=opt_g.state_dict(),
                      opt_d=opt_d.state_dict(), rng=gen.get_state(), step=step)  # fmt: skip
            G.eval()
            with torch.no_grad():
                save_grid([r for r in ((G(fixed_z) + 1) / 2).split(16)], work / f"samples_{step:06d}.png")
            G.train()

    clf = train_classifier(out, logf, epochs=30)
    G.eval()
    with torch.no_grad():
        z = torch.randn(1500, g_kw["nz"], 1, 1, generator=torch.Generator().manual_seed(2))
        fake = G(z)
        f_fake = clf.features(fake).numpy()
        heldout, _ = digits_images("heldout")
        f_train, f_held = clf.features(real).numpy(), clf.features(heldout).numpy()
        conf = F.softmax(clf(fake), 1).max(1).values
        classes = torch.bincount(clf(fake).argmax(1), minlength=10)
    quality = {
        "feature_distance_vs_train": round(frechet(f_fake, f_train), 3),
        "feature_distance_heldout_vs_train": round(frechet(f_held, f_train), 3),
        "feature_net": "digit_classifier (classifier.safetensors, penultimate 64-d)",
        "confident_fraction": round((conf > 0.9).float().mean().item(), 4),
        "class_histogram": classes.tolist(),
        "samples": 1500,
    }
    spec = spec_for_family("dcgan", g_kw)
    spec.provenance = {
        "trained_by": "scripts/train_teachers.py digits",
        "data": "scikit-learn digits (8x8 upsampled bicubic to 32x32), 85% split",
        "steps": steps,
        "batch": batch,
        "loss": "non-saturating GAN (BCE with logits), Adam 2e-4 b1 0.5",
        "final_losses": last_losses(logf, name, ("d_loss", "g_loss")),
        "quality": quality,
        "discriminator": {
            "family": "dcgan_d",
            "kwargs": d_kw,
            "file": "discriminator.safetensors",
            "loss": "nonsat",
        },
        "feature_net": {"family": "digit_classifier", "file": "classifier.safetensors"},
    }
    save_weights(G, out / "generator.safetensors", torch.float16)
    save_weights(D, out / "discriminator.safetensors", torch.float16)
    spec.save(out / "model.json")
    with torch.no_grad():
        grid = (G(fixed_z) + 1) / 2
    save_grid(list(grid.split(16)), out / "samples.png")
    log(logf, model=name, done=True, **quality)


# ------------------------------------------------------------------------------------------- photo
def evaluate_photo(G: torch.nn.Module, size: int = 256) -> tuple[dict, list[torch.Tensor]]:
    """PSNR/SSIM of degraded input and of G's output against the clean held-out crops."""
    clean = torch.stack([center_crop(p, size) for p in bundled_photos("heldout")])
    noisy = degrade(clean, torch.Generator().manual_seed(123))
    was_training = G.training
    G.eval()
    with torch.no_grad():
        out = ((G(noisy * 2 - 1) + 1) / 2).clamp(0, 1)
    G.train(was_training)

    def mean_metric(fn, a: torch.Tensor) -> float:
        vals = [
            fn(c.permute(1, 2, 0).numpy(), x.permute(1, 2, 0).numpy()) for c, x in zip(clean, a, strict=True)
        ]
        return round(float(np.mean(vals)), 3)

    psnr = lambda c, x: peak_signal_noise_ratio(c, x, data_range=1.0)  # noqa: E731
    ssim = lambda c, x: structural_similarity(c, x, data_range=1.0, channel_axis=2)  # noqa: E731
    metrics = {
        "psnr_input": mean_metric(psnr, noisy),
        "psnr_output": mean_metric(psnr, out),
        "ssim_input": mean_metric(ssim, noisy),
        "ssim_output": mean_metric(ssim, out),
        "eval": f"held-out {', '.join(p for p in ('chelsea', 'rocket'))}, center {size}x{size}",
    }
    return metrics, [noisy, out, clean]


def train_photo(steps: int, batch: int, patch: int, ngf: int, n_blocks: int, warmup: int) -> None:
    name = "photo-restore"
    work, out = SCRATCH / name, EMBEDDED / name
    work.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    logf = work / "log.jsonl"
    # BatchNorm, not CycleGAN's InstanceNorm: conv + InstanceNorm is blind to a patch's global colour and
    # contrast (both are normalised away), so an InstanceNorm restorer stalled at L1 ~0.3 here.
    g_kw = {"input_nc": 3, "output_nc": 3, "ngf": ngf, "n_blocks": n_blocks, "norm": "batch"}
    d_kw = {"input_nc": 6, "ndf": 64, "n_layers": 3, "norm": "batch"}
    G, D = create("resnet", **g_kw), create("patchgan", **d_kw)
    opt_g = torch.optim.Adam(G.parameters(), 2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), 2e-4, betas=(0.5, 0.999))
    photos = bundled_photos("train")
    gen = torch.Generator().manual_seed(0)
    lambda_l1, step, t0, t_start = 100.0, 0, time.time(), time.time()
    if ck := load_ckpt(work / "ckpt.pt"):
        G.load_state_dict(ck["G"]), D.load_state_dict(ck["D"])
        opt_g.load_state_dict(ck["opt_g"]), opt_d.load_state_dict(ck["opt_d"])
        gen.set_state(ck["rng"])
        step = ck["step"]
        print(f"resumed {name} at step {step}")
    while step < steps:
        for opt in (opt_g, opt_d):
            for group in opt.param_groups:
                group["lr"] = lr_at(step, steps, 2e-4)
        clean = random_crops(photos, batch, patch, gen)
        x = degrade(clean, gen) * 2 - 1
        y = clean * 2 - 1
        fake = G(x)
        g_l1 = (fake - y).abs().mean()
        if step < warmup:
            # L1 alone first: a strong D early on pulled the colours away and L1 stalled at ~0.3
            d_loss = g_adv = torch.zeros(())
        else:
            # LSGAN on a conditional PatchGAN, as pix2pix
            d_real = D(torch.cat([x, y], 1))
            d_fake = D(torch.cat([x, fake.detach()], 1))
            d_loss = 0.5 * (((d_real - 1) ** 2).mean() + (d_fake**2).mean())
            opt_d.zero_grad()
            d_loss.backward()
            opt_d.step()
            g_adv = ((D(torch.cat([x, fake], 1)) - 1) ** 2).mean()
        g_loss = g_adv + lambda_l1 * g_l1
        opt_g.zero_grad()
        g_loss.backward()
        opt_g.step()
        step += 1
        if step % 20 == 0 or step == steps:
            log(logf, model=name, step=step, d_loss=round(d_loss.item(), 4), g_adv=round(g_adv.item(), 4),
                g_l1=round(g_l1.item(), 4), s_per_step=round((time.time() - t0) / 20, 3))  # fmt: skip
            t0 = time.time()
        if step % 200 == 0 or step == steps:
            save_ckpt(work / "ckpt.pt", G=G.state_dict(), D=D.state_dict(), opt_g=opt_g.state_dict(),
                      opt_d=opt_d.state_dict(), rng=gen.get_state(), step=step)  # fmt: skip
        if step % 1000 == 0 or step == steps:
            metrics, rows = evaluate_photo(G)
            log(logf, model=name, step=step, **metrics)
            save_grid(rows, work / f"samples_{step:06d}.png")

    metrics, rows = evaluate_photo(G)
    G.eval()
    spec = spec_for_family("resnet", g_kw, default_size=(256, 256))
    spec.input_range, spec.output_range = (-1.0, 1.0), (-1.0, 1.0)
    spec.provenance = {
        "trained_by": f"scripts/train_teachers.py photo --steps {steps}",
        "task": "blind photo restoration: Gaussian blur (sigma 0.5-1.6) + Gaussian noise (std 0.02-0.10) -> clean",
        "data": "scikit-image + scikit-learn bundled photos (edgedistill.data.bundled.TRAIN_PHOTOS), "
        f"random {patch}x{patch} crops",
        "steps": steps,
        "batch": batch,
        "loss": f"pix2pix: LSGAN (conditional PatchGAN) + {lambda_l1:g} x L1 (L1 only for the first {warmup} steps), "
        "Adam 2e-4 b1 0.5",
        "final_losses": last_losses(logf, name, ("d_loss", "g_adv", "g_l1")),
        "train_wall_s": round(time.time() - t_start),
        "quality": metrics,
        "discriminator": {
            "family": "patchgan",
            "kwargs": d_kw,
            "file": "discriminator.safetensors",
            "loss": "lsgan",
        },
    }
    save_weights(G, out / "generator.safetensors", torch.float16)
    save_weights(D, out / "discriminator.safetensors", torch.float16)
    spec.save(out / "model.json")
    save_grid(rows, out / "samples.png")
    log(logf, model=name, done=True, **metrics)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="which", required=True)
    d = sub.add_parser("digits")
    d.add_argument("--steps", type=int, default=3000)
    d.add_argument("--batch", type=int, default=64)
    p = sub.add_parser("photo")
    p.add_argument("--steps", type=int, default=3200)
    p.add_argument("--batch", type=int, default=6)
    p.add_argument("--patch", type=int, default=64)
    p.add_argument("--ngf", type=int, default=64)
    p.add_argument("--n-blocks", type=int, default=6)
    p.add_argument("--warmup", type=int, default=800, help="L1-only steps before the GAN loss starts")
    p.add_argument("--threads", type=int, default=0)
    a = ap.parse_args()
    if getattr(a, "threads", 0):
        torch.set_num_threads(a.threads)
    if a.which == "digits":
        train_digits(a.steps, a.batch)
    else:
        assert math.log2(a.patch) % 1 == 0 or a.patch % 4 == 0, "patch must be divisible by 4"
        train_photo(a.steps, a.batch, a.patch, a.ngf, a.n_blocks, a.warmup)


if __name__ == "__main__":
    main()
