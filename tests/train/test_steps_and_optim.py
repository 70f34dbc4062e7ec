"""Steps, strategies and optimizer recipes on synthetic numpy batches."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import zoo
from zoo.train import setup_training
from zoo.train.config import (OptimizerConfig, ScheduleConfig, TrainConfig, apply_overrides,
                              total_steps, warmup_steps)
from zoo.train.optim import create_optimizer, create_schedule, decay_mask
from zoo.train.steps import cross_entropy

BATCH = 16
SHAPE = (BATCH, 28, 28, 1)


def _batches(count: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
    rng = np.random.RandomState(seed)
    return [{"image": rng.randn(*SHAPE).astype(np.float32),
             "label": rng.randint(0, 10, BATCH).astype(np.int32),
             "mask": np.ones(BATCH, bool)} for _ in range(count)]


def _run(parallel: str, devices, batches, *, tx=None, ema_decay=None):
    model = zoo.create_model("simple_cnn", drop_rate=0.0)
    tx = tx or optax.sgd(0.01, momentum=0.9, nesterov=True)
    trainer = setup_training(model, tx, SHAPE, parallel=parallel, devices=devices,
                             ema_decay=ema_decay)
    state, losses = trainer.state, []
    for batch in batches:
        state, metrics = trainer.train_step(state, trainer.put_batch(batch))
        losses.append(trainer.metrics_to_host(metrics)["loss"])
    trainer.state = state
    return trainer, losses


@pytest.fixture(scope="module")
def runs():
    batches = _batches(3)
    return {name: _run(parallel, devices, batches) for name, parallel, devices in
            [("one", "jit", jax.devices()[:1]), ("jit8", "jit", None), ("pmap8", "pmap", None)]}


def test_one_device_jit_and_pmap_agree(runs):
    assert jax.device_count() == 8
    reference_trainer, reference_losses = runs["one"]
    reference = jax.device_get(reference_trainer.canonical_state().params)
    for name in ("jit8", "pmap8"):
        trainer, losses = runs[name]
        assert trainer.num_devices == 8
        np.testing.assert_allclose(losses, reference_losses, rtol=1e-5, atol=1e-6)
        params = jax.device_get(trainer.canonical_state().params)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
                     params, reference)
    assert int(jax.device_get(runs["pmap8"][0].canonical_state().step)) == 3


def test_eval_sums_are_exact_with_padding(runs):
    trainer, _ = runs["jit8"]
    batch = _batches(1, seed=5)[0]
    full = trainer.metrics_to_host(trainer.eval_step(trainer.state, trainer.put_batch(batch)))
    padded = dict(batch, mask=np.arange(BATCH) < 10)
    part = trainer.metrics_to_host(trainer.eval_step(trainer.state, trainer.put_batch(padded)))
    assert full["count"] == BATCH and part["count"] == 10
    logits = trainer.state.apply_fn(trainer.state.variables(), batch["image"][:10])
    expected_top1 = float(np.sum(np.argmax(np.asarray(logits), -1) == batch["label"][:10]))
    assert part["top1"] == expected_top1
    pmap_trainer, _ = runs["pmap8"]
    pmap_part = pmap_trainer.metrics_to_host(
        pmap_trainer.eval_step(pmap_trainer.state, pmap_trainer.put_batch(padded)))
    assert pmap_part["count"] == 10


def test_jit_steps_compile_with_zoo_cpu_options_and_pmap_with_xla_defaults(runs):
    from tests.xla_helpers import ynn_fused_convolutions
    from zoo.runtime import compiler_options

    trainer, _ = runs["jit8"]
    assert trainer.compiler_options == compiler_options("cpu") != {}
    assert runs["pmap8"][0].compiler_options == {}
    # simple_cnn's 28x28 convs are XLA's (zoo.layers.cpu_conv); with the
    # options none of them is a YNNPACK fusion.
    batch = trainer.put_batch(_batches(1)[0])
    text = trainer.eval_step.lower(trainer.state, batch).compile().as_text()
    assert " convolution(" in text and ynn_fused_convolutions(text) == 0


def test_global_batch_not_divisible_is_a_clear_error():
    model = zoo.create_model("simple_cnn")
    with pytest.raises(ValueError, match="global batch size 12 .* number of devices \\(8\\)"):
        setup_training(model, optax.sgd(0.1), (12, 28, 28, 1))


def test_weight_decay_mask_excludes_biases_and_norms():
    params = {"conv": {"kernel": jnp.ones((3, 3, 1, 4)), "bias": jnp.ones((4,))},
              "bn": {"scale": jnp.ones((4,)), "bias": jnp.zeros((4,))},
              "head": {"kernel": jnp.ones((4, 2))}}
    assert decay_mask(params) == {"conv": {"kernel": True, "bias": False},
                                  "bn": {"scale": False, "bias": False}, "head": {"kernel": True}}
    opt = create_optimizer(OptimizerConfig(name="sgd", learning_rate=0.1, momentum=0.0,
                                           weight_decay=0.5),
                           ScheduleConfig(name="constant"), total_steps=10, warmup_steps=0)
    zeros = jax.tree.map(jnp.zeros_like, params)
    updates, _ = opt.tx.update(zeros, opt.tx.init(params), params)
    # With zero gradients only decay moves params: -lr * wd * p on kernels, nothing elsewhere.
    np.testing.assert_allclose(updates["conv"]["kernel"], -0.05)
    np.testing.assert_allclose(updates["head"]["kernel"], -0.05)
    for leaf in (updates["conv"]["bias"], updates["bn"]["scale"], updates["bn"]["bias"]):
        np.testing.assert_array_equal(leaf, 0.0)


@pytest.mark.parametrize("name", ["adamw", "lamb", "lars"])
def test_every_recipe_builds_and_updates(name):
    params = {"kernel": jnp.ones((3, 3)), "bias": jnp.ones((3,))}
    opt = create_optimizer(OptimizerConfig(name=name, learning_rate=0.1, weight_decay=0.1,
                                           grad_clip=1.0),
                           ScheduleConfig(), total_steps=10, warmup_steps=2)
    grads = jax.tree.map(lambda p: jnp.full_like(p, 0.5), params)
    updates, _ = opt.tx.update(grads, opt.tx.init(params), params)
    assert all(np.all(np.isfinite(u)) for u in jax.tree.leaves(updates))


def test_warmup_cosine_values():
    schedule = create_schedule(ScheduleConfig(name="cosine", final_fraction=0.0), peak=1.0,
                               total_updates=110, warmup_updates=10)
    assert float(schedule(0)) == 0.0
    assert float(schedule(5)) == pytest.approx(0.5)
    assert float(schedule(10)) == pytest.approx(1.0)
    assert float(schedule(60)) == pytest.approx(0.5, abs=1e-6)  # halfway through the cosine
    assert float(schedule(110)) == pytest.approx(0.0, abs=1e-7)
    step = create_schedule(ScheduleConfig(name="step", boundaries=(0.5,), decay_factor=0.1),
                           peak=1.0, total_updates=100, warmup_updates=0)
    assert float(step(49)) == pytest.approx(1.0) and float(step(51)) == pytest.approx(0.1)


def test_epochs_and_steps_convert_once():
    config = TrainConfig(epochs=2.5, optimizer=OptimizerConfig(accumulation=2),
                         schedule=ScheduleConfig(warmup_epochs=1.0))
    assert total_steps(config, 22) == 55
    assert warmup_steps(config, 22) == 11
    assert total_steps(apply_overrides(config, ["steps=7"]), 22) == 7


def test_multisteps_accumulation_equals_big_batch():
    opt_config = OptimizerConfig(name="sgd", learning_rate=0.1, momentum=0.9)
    big = create_optimizer(opt_config, ScheduleConfig(name="constant"), total_steps=4,
                           warmup_steps=0)
    accumulated = create_optimizer(dataclasses.replace(opt_config, accumulation=2),
                                   ScheduleConfig(name="constant"), total_steps=8, warmup_steps=0)
    params = {"w": jnp.arange(4.0)}
    grads = [{"w": jnp.full((4,), float(i + 1))} for i in range(4)]
    p_big, s_big = params, big.tx.init(params)
    for a, b in ((grads[0], grads[1]), (grads[2], grads[3])):
        mean = jax.tree.map(lambda x, y: (x + y) / 2, a, b)
        updates, s_big = big.tx.update(mean, s_big, p_big)
        p_big = optax.apply_updates(p_big, updates)
    p_acc, s_acc = params, accumulated.tx.init(params)
    for g in grads:
        updates, s_acc = accumulated.tx.update(g, s_acc, p_acc)
        p_acc = optax.apply_updates(p_acc, updates)
    np.testing.assert_allclose(p_acc["w"], p_big["w"], rtol=1e-6)
    assert float(accumulated.learning_rate_fn(jnp.asarray(3))) == pytest.approx(0.1)


def test_label_smoothing_loss():
    logits = jnp.array([[2.0, 0.0, -1.0]])
    labels = jnp.array([0])
    log_p = jax.nn.log_softmax(logits)[0]
    expected = -(0.9 + 0.1 / 3) * log_p[0] - (0.1 / 3) * (log_p[1] + log_p[2])
    assert float(cross_entropy(logits, labels, 0.1)[0]) == pytest.approx(float(expected), rel=1e-6)
    assert float(cross_entropy(logits, labels, 0.0)[0]) == pytest.approx(float(-log_p[0]), rel=1e-6)


def test_ema_tracks_params():
    batches = _batches(2)
    trainer, _ = _run("jit", jax.devices()[:1], batches[:1], tx=optax.sgd(0.1), ema_decay=0.5)
    before = jax.device_get(trainer.state.params)
    ema_before = jax.device_get(trainer.state.ema_params)
    state, _ = trainer.train_step(trainer.state, trainer.put_batch(batches[1]))
    after, ema_after = jax.device_get(state.params), jax.device_get(state.ema_params)
    jax.tree.map(lambda e0, p1, e1: np.testing.assert_allclose(e1, 0.5 * e0 + 0.5 * p1, rtol=1e-6),
                 ema_before, after, ema_after)
    assert not np.allclose(before["head"]["kernel"], after["head"]["kernel"])


def test_mixed_batch_loss_is_the_weighted_cross_entropy_of_both_labels():
    rng = np.random.RandomState(3)
    batch = {**_batches(1)[0], "label_mix": rng.randint(0, 10, BATCH).astype(np.int32),
             "mix_weight": rng.uniform(0, 1, BATCH).astype(np.float32)}
    model = zoo.create_model("simple_cnn", drop_rate=0.0)
    trainer = setup_training(model, optax.sgd(0.0), SHAPE, parallel="jit",
                             devices=jax.devices()[:1])
    variables = jax.device_get(trainer.state.variables(trainer.state.params))
    logits, _ = model.apply(variables, batch["image"], train=True, mutable=["batch_stats"])
    w = batch["mix_weight"]
    mixed = w * cross_entropy(logits, batch["label"], 0.0) + (1 - w) * cross_entropy(
        logits, batch["label_mix"], 0.0)
    plain = cross_entropy(logits, batch["label"], 0.0)
    half = {k: v for k, v in batch.items() if k != "mix_weight"}
    with pytest.raises(ValueError, match="needs both 'label_mix' and 'mix_weight'"):
        trainer.train_step(trainer.state, trainer.put_batch(half))
    _, metrics = trainer.train_step(trainer.state, trainer.put_batch(batch))
    loss = trainer.metrics_to_host(metrics)["loss"]
    assert loss == pytest.approx(float(np.mean(mixed)), rel=1e-5)
    assert abs(loss - float(np.mean(plain))) > 1e-3     # the mix changed the loss


def test_mixup_and_cutmix_alphas_are_validated():
    from zoo.train.config import validate

    assert validate(TrainConfig(mixup_alpha=0.2, cutmix_alpha=1.0)).cutmix_alpha == 1.0
    with pytest.raises(ValueError, match="mixup_alpha must be >= 0"):
        validate(TrainConfig(mixup_alpha=-0.1))
