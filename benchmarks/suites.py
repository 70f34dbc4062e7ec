"""The standard benchmark suites, run with `zoo bench --suite NAME`.

quick: a few small models at small batch and resolution, inference and
  training; a few minutes on a 2-core CPU. The smoke test of the harness and
  of a machine. Results: benchmarks/results/cpu/quick/.
accelerator: the four reference architectures at batch 1 (latency) and large
  batches (throughput), float32 and bfloat16, inference and training, on one
  device; run it on a GPU or TPU and commit the output under
  benchmarks/results/<device>/accelerator/.
accelerator_multi: the same models at a large global batch split over every
  device with jit (the engine's default) and pmap.
"""

from zoo.bench.suites import Suite, Sweep

REFERENCE_MODELS = ("resnet50", "efficientnet_b0", "vit_b_16", "convnext_tiny")

SUITES = {
    "quick": Suite(
        name="quick",
        description="small models at small batch and size, infer + train (minutes on a CPU)",
        sweeps=(
            Sweep(models=("simple_cnn",), batch_sizes=(8, 32), modes=("infer", "train"),
                  warmup=3, steps=20),
            Sweep(models=("resnet18", "mobilenet_v2"), batch_sizes=(8,), image_sizes=(64,),
                  modes=("infer", "train"), warmup=2, steps=10),
        ),
    ),
    "accelerator": Suite(
        name="accelerator",
        description="reference models at batch 1, 128 and 256, fp32 and bf16, infer + train",
        sweeps=(
            Sweep(models=REFERENCE_MODELS, batch_sizes=(1, 128, 256),
                  dtypes=("float32", "bfloat16"), modes=("infer", "train"),
                  warmup=10, steps=50),
        ),
    ),
    "accelerator_multi": Suite(
        name="accelerator_multi",
        description="reference models, global batch 256 over all devices, jit and pmap, bf16",
        sweeps=(
            Sweep(models=REFERENCE_MODELS, batch_sizes=(256,), dtypes=("bfloat16",),
                  modes=("infer", "train"), parallel=("jit", "pmap"), warmup=10, steps=50),
        ),
    ),
}
