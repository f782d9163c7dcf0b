"""The G_y collapse study's short runs: G_y trained by its own GAN alone (D_y and the adversarial term, i.e.
what G_y learns in DSGAN when the generated-label cycle term does not reach it), with variants, then measured
by ``em_label_diagnostics``. Cheap on a CPU: G_x, F_y and D_x are built but never stepped.

    python scripts/em_gy_ablation.py --vnc VNC_STACK --out DIR --iterations 1500 --variant side128
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

VARIANTS = {  # name -> EMTrainConfig overrides
    "side128": {"crop": 256},  # the shipped run's geometry: G_y at 128 from 2x2 noise
    "side256": {"crop": 512},  # the paper's: G_y at 256 from 4x4 noise
    "side128-ms": {"crop": 256, "diversity_weight": 0.2},
}


def main() -> None:
    import torch

    torch.set_num_threads(1)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--vnc", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--iterations", type=int, default=1500)
    p.add_argument("--variant", choices=sorted(VARIANTS), required=True)
    args = p.parse_args()

    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from em_label_diagnostics import measure

    from napari_biogans.data import em
    from napari_biogans.training.em_trainer import EMTrainConfig, EMTrainer

    images, labels = em.read_sections(args.vnc, range(10))
    overrides = VARIANTS[args.variant]
    config = EMTrainConfig(mode="dsgan", iterations=args.iterations, label_width=16, image_width=16,
                           label_d_width=16, image_d_width=16, reconstructor_width=16, device="cpu",
                           checkpoint_every=10**9, **{k: v for k, v in overrides.items() if k != "diversity_weight"})
    out = Path(args.out) / args.variant
    trainer = EMTrainer(config, images, labels, out)
    weight = overrides.get("diversity_weight", 0.0)
    Gy = trainer.models["Gy"]
    t0 = time.time()
    for i in range(args.iterations):
        trainer._set_lr()
        real = trainer._down(trainer._crops(config.crop)[0])
        if weight:  # the label GAN step plus the mode-seeking term on the same fakes
            z = trainer._noise(Gy, trainer.label_side)
            fake = Gy(z)
            trainer._d_step("Dy", real, trainer.pools["y"].query(fake.float()))
            loss = trainer._adversarial("Dy", fake) + weight / (trainer._mode_seeking(Gy, fake, z) + 1e-5)
            trainer.optimizer_step(("Gy",), loss)
        else:
            trainer._label_gan(real)
        trainer.iteration += 1
        if (i + 1) % 250 == 0:
            print(f"{args.variant}: {i + 1} iterations, {time.time() - t0:.0f} s", flush=True)
    path = trainer.save_model(out / "em_model.safetensors")
    result = {"variant": args.variant, "iterations": args.iterations, "seconds": round(time.time() - t0, 1),
              **measure(path, args.vnc)}
    (out / "diagnostics.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
