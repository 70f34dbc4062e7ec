"""Peak dense TFLOP/s per device, for model FLOPs utilisation (MFU).

MFU = achieved FLOP/s / (peak FLOP/s per device x devices used). The peaks are
the vendors' dense (no structured sparsity) tensor-unit numbers for one JAX
device, matched against `jax.Device.device_kind`.

"float32" means what XLA runs a float32 convolution or matmul on at JAX's
default precision: TF32 tensor cores on NVIDIA Ampere and newer, single-pass
bf16 on the TPU MXU (so a TPU's float32 peak equals its bf16 peak), plain FP32
units on Volta. A device that is not in the table (every CPU) has no peak:
MFU is then None, never guessed; `--peak-tflops` supplies one. So is a
float32 run at another matmul precision (`--matmul-precision highest`: full
float32 units, several bf16 passes on a TPU), except TF32 asked for by name
on an NVIDIA GPU, which is what the float32 column holds.
"""

from __future__ import annotations

import re
from typing import NamedTuple


class DevicePeak(NamedTuple):
    """Peak dense TFLOP/s of one device.

    Attributes:
      pattern: regular expression searched in `device_kind`.
      name: the product, for reports.
      bfloat16: peak for bfloat16 inputs with float32 accumulation; None where
        the hardware has no bf16 unit (V100).
      float32: peak for float32 inputs at JAX's default matmul precision.
    """

    pattern: str
    name: str
    bfloat16: float | None
    float32: float


# Order matters: the first pattern found in device_kind wins (PCIe/NVL before
# the bare "H100", which is the SXM part).
PEAKS: tuple[DevicePeak, ...] = (
    DevicePeak(r"H100.*PCIe", "H100 PCIe", 756.0, 378.0),
    DevicePeak(r"H100.*NVL", "H100 NVL", 835.0, 418.0),
    DevicePeak(r"H100", "H100 SXM", 989.4, 494.7),
    DevicePeak(r"H200", "H200 SXM", 989.4, 494.7),
    DevicePeak(r"A100", "A100", 312.0, 156.0),
    # NVIDIA publishes no A10G datasheet; these are the figures cloud providers
    # quote. Override with --peak-tflops if yours differ.
    DevicePeak(r"A10G", "A10G", 70.0, 35.0),
    DevicePeak(r"\bL4\b", "L4", 121.0, 60.0),
    DevicePeak(r"V100.*PCIE", "V100 PCIe", None, 14.0),
    DevicePeak(r"V100", "V100 SXM2", None, 15.7),
    DevicePeak(r"RTX 4090", "RTX 4090", 165.2, 82.6),
    DevicePeak(r"TPU v4", "TPU v4", 275.0, 275.0),
    DevicePeak(r"TPU v5 ?(lite|e)", "TPU v5e", 197.0, 197.0),
    DevicePeak(r"TPU v5p?$", "TPU v5p", 459.0, 459.0),
    DevicePeak(r"TPU v6 ?(lite|e)", "TPU v6e", 918.0, 918.0),
)

DTYPES: tuple[str, ...] = ("float32", "bfloat16")
# JAX's coarse matmul precisions (`jax_default_matmul_precision`), for float32
# operands: "default" leaves the choice to XLA (the float32 column above);
# "high" and "tensorfloat32" are TF32 on NVIDIA GPUs, 3 bf16 passes on TPUs;
# "highest" and "float32" full float32 (6 passes on TPUs).
MATMUL_PRECISIONS: tuple[str, ...] = (
    "default", "high", "tensorfloat32", "highest", "float32", "bfloat16")


def lookup_peak(device_kind: str) -> DevicePeak | None:
    """The table entry whose pattern occurs in `device_kind`, or None."""
    for peak in PEAKS:
        if re.search(peak.pattern, device_kind):
            return peak
    return None


def peak_tflops(device_kind: str, dtype: str, override: float | None = None,
                matmul_precision: str = "default") -> float | None:
    """Peak dense TFLOP/s of one `device_kind` device for `dtype`.

    Args:
      device_kind: `jax.devices()[0].device_kind`, e.g. "NVIDIA H100 80GB HBM3".
      dtype: "float32" or "bfloat16".
      override: a user-given peak (`--peak-tflops`); wins over the table.
      matmul_precision: JAX's default matmul precision the run was lowered
        with (one of MATMUL_PRECISIONS, or whatever the process was given,
        such as a dot algorithm's name). It changes only float32 products:
        the table's float32 peak holds at "default", and at "high" or
        "tensorfloat32" on an NVIDIA GPU (TF32); at any other, the float32
        peak is unknown.

    Returns:
      TFLOP/s per device, or None where unknown (then MFU is not reported).
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    if override is not None:
        if override <= 0:
            raise ValueError(f"peak TFLOP/s must be positive, got {override}")
        return float(override)
    peak = lookup_peak(device_kind)
    if peak is None:
        return None
    if dtype == "bfloat16":
        return peak.bfloat16
    tf32_by_name = matmul_precision in ("high", "tensorfloat32") and not peak.name.startswith("TPU")
    return peak.float32 if matmul_precision == "default" or tf32_by_name else None
