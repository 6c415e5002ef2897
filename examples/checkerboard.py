"""Checkerboard artefacts: a stride-2 transposed conv vs ResizeConv2d, on the same input, same kernels.

    python examples/checkerboard.py [--out docs/checkerboard.png]

Two upsampling layers (x2 each) with the same positive 3x3 stencil (each scaled to keep the image's
mean brightness), applied to a smooth image:
`nn.ConvTranspose2d(k=3, stride=2)` lets the kernel overlap unevenly (a 3-wide kernel at stride 2
puts 1 or 2 taps on an output pixel per dimension: 1, 2 and 4 overlaps in 2-D), which prints a
grid on the output; `convext.nn.ResizeConv2d` (nearest upsampling, then the conv) gives every
output pixel the same taps. Both have the same output size (ResizeConv2d matches the transposed
conv's). The score is the energy of the period-2 (checkerboard) pattern relative to the image's.
"""
import argparse
import os
import sys

import torch
import torch.nn.functional as F
from torch import nn

try:
    import convext
except ImportError:  # run from a source checkout: python examples/<name>.py
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import convext


def smooth_image(size=24):
    """A smooth test image: a soft disc on a gentle gradient, values in [0, 1]."""
    y, x = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    disc = torch.sigmoid((0.6 - (x ** 2 + (y + 0.1) ** 2).sqrt()) * 12)
    return (0.25 + 0.25 * x + 0.5 * disc).clamp(0, 1)[None, None]


def checkerboard_score(img):
    """Energy of the period-2 pattern (the mean over each of the 4 pixel phases, minus the overall
    mean), over the image's own variance: 0 for no checkerboard."""
    img = img[0, 0, 4:-4, 4:-4]  # away from the borders
    img = img[: img.shape[0] // 2 * 2, : img.shape[1] // 2 * 2]
    smooth = F.avg_pool2d(img[None, None], 3, 1, 1)[0, 0]  # remove the image content at low frequency
    detail = img - smooth
    phases = torch.stack([detail[i::2, j::2].mean() for i in (0, 1) for j in (0, 1)])
    return (phases.var() / img.var()).item()


def build(kernel):
    """Two x2 upsampling layers each, both kinds, with the same kernel (1 channel, no bias)."""
    t = nn.Sequential(*[nn.ConvTranspose2d(1, 1, 3, stride=2, padding=1, output_padding=1, bias=False)
                        for _ in range(2)])
    r = nn.Sequential(*[convext.nn.ResizeConv2d(1, 1, 3, scale_factor=2, padding=1, output_padding=1, bias=False)
                        for _ in range(2)])
    kernel = kernel / kernel.sum()
    with torch.no_grad():
        for layer in t:
            # (in, out, k, k): the transposed conv scatters with the kernel; each input pixel feeds 4 outputs
            # on average, so x4 keeps the image's mean brightness
            layer.weight.copy_(kernel * 4)
        for layer in r:
            layer.conv.weight.copy_(kernel.flip(-1, -2))  # the conv gathers with it (flipped: the same stencil)
    return t, r


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_out = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "checkerboard.png")
    parser.add_argument("--out", default=default_out, help="PNG to write ('' for none)")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    kernel = torch.rand(1, 1, 3, 3) * 0.5 + 0.5  # positive, like a smoothing filter a net might learn
    t, r = build(kernel)
    x = smooth_image()
    with torch.no_grad():
        yt, yr = t(x), r(x)
    assert yt.shape == yr.shape
    scores = {"transposed": checkerboard_score(yt), "resize": checkerboard_score(yr)}
    print(f"input {tuple(x.shape)} -> output {tuple(yt.shape)} (two x2 layers, same 3x3 kernel)")
    print(f"checkerboard energy / image variance: ConvTranspose2d(stride 2) {scores['transposed']:.2e}, "
          f"ResizeConv2d {scores['resize']:.2e} ({scores['transposed'] / max(scores['resize'], 1e-30):.0f}x)")
    if args.out:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, axes = plt.subplots(1, 3, figsize=(9, 3.3), dpi=80)
        panels = [(x, "input (24x24)"), (yt, "ConvTranspose2d k3 s2, x2 twice"), (yr, "ResizeConv2d k3, x2 twice")]
        for ax, (img, title) in zip(axes, panels):  # one grey scale for all: both layers keep the mean
            ax.imshow(img[0, 0].clamp(0, 1).numpy(), cmap="gray", interpolation="nearest", vmin=0, vmax=1)
            ax.set_title(title, fontsize=10)
            ax.axis("off")
        fig.tight_layout()
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        fig.savefig(args.out)
        plt.close(fig)
        print(f"saved {args.out}")
    return scores


if __name__ == "__main__":
    main()
