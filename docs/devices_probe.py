"""What support devices (ECG leads, catheters, tubes: ``ct2x.imaging.devices``) and the preset whose physics the
fit starts from do to the chain row's realism: the imaging-chain row of a ``ct2x evaluate`` report rendered again
as the report renders it (the held-out CTs as read, the report's views, each style reference's look fitted by the
users' rule), once for each preset and device count asked, each CT with its own draw of devices (seed = the CT's
index), and scored like the report (FID, KID, C2ST of InceptionV3 features on the scored region, against the
report's real set read the same way).

Usage: python docs/devices_probe.py REPORT [--devices 0 2 4 6] [--presets mobile_carm_flat_panel] [--sheet F]
(run from where the report's folders are found, as ``ct2x evaluate`` was; a few minutes per count on a CPU; the
report's scoring is docs/realism_probe.py's ``report_scoring``).
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from realism_probe import report_scoring  # docs/, beside this script

from ct2x.checkpoint import load_card
from ct2x.evaluation.methods import CHAIN_PRESET, chain_ct_images, evaluation_views, marched, scale_views
from ct2x.imaging import PRESETS
from ct2x.volume import read_ct


def main() -> None:
    """Render and score the chain row for each preset and device count; print one table; save a contact sheet."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path)
    parser.add_argument("--devices", type=int, nargs="+", default=[0, 2, 4, 6])
    parser.add_argument("--presets", nargs="+", default=[CHAIN_PRESET], choices=list(PRESETS))
    parser.add_argument("--sheet", type=Path, default=Path("devices_probe.png"))
    args = parser.parse_args()
    scoring = report_scoring(args.report)  # the report's scored region and real set
    metrics = scoring.metrics
    folder = Path(metrics["radiographs"]["folder"])
    card, config = load_card(next(iter(metrics["models"].values()))["model"])
    films = [folder / name for name in metrics["style_references"]]
    settings = metrics["settings"]
    cts = [read_ct(entry["source"]) for entry in metrics["data"]["cts"]]
    views = [[v.carm for v in evaluation_views(config, card, ct)] for ct in cts]
    areas = [marched(ct, carms, settings["drr_step"], "cpu") for ct, carms in zip(cts, views, strict=True)]
    scales = [scale_views(config, card, ct)[:1] for ct in cts]  # chain_ct_images renders one sweep view too
    sweeps = [marched(ct, scale, settings["scale_step"], "cpu") for ct, scale in zip(cts, scales, strict=True)]
    sheet = []
    print("| preset | support devices per CT | FID | KID | C2ST AUC | images |\n|---|---|---|---|---|---|")
    for preset, count in ((preset, count) for preset in args.presets for count in args.devices):
        made = []
        for index, (ct, carms, area, scale, sweep) in enumerate(zip(cts, views, areas, scales, sweeps, strict=True)):
            base = dataclasses.replace(PRESETS[preset].parameters, devices=count, devices_seed=index)
            made.append(chain_ct_images(ct, area, sweep, carms, scale, films, settings["seed"], base)[0])
        images = torch.from_numpy(np.stack(made)).reshape(-1, 1, *made[0].shape[-2:])
        scored = scoring.score(images)
        kid, auc = f"{scored.kid:.3f} ± {scored.kid_std:.3f}", f"{scored.c2st_auc:.3f}"
        print(f"| {preset} | {count} | {scored.fid:.1f} | {kid} | {auc} | {scored.images} |", flush=True)
        sheet.append(torch.cat(list(images[:: max(1, len(images) // 6)][:6, 0]), 1))
    Image.fromarray((torch.cat(sheet, 0).clamp(0, 1).numpy() * 255).astype(np.uint8)).save(args.sheet)


if __name__ == "__main__":
    main()
