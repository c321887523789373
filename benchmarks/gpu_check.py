"""GPU check: does every engine path give the CPU's answers on CUDA, and how fast is it?

One command, meant for a lent GPU machine (under 4 minutes on one GPU), that writes
``gpu_check.json`` and ``gpu_check.md`` after every section, so that a run cut off by its
time limit still reports what it measured:

1. environment: device, capability, native bfloat16, CPU model and ISA flags, torch;
2. equivalence: the same chunk trained on the CPU and on the device, for each engine path
   (MLP fast path, CNN1d, a user module with BatchNorm, a language model), and the
   largest differences found (weights relative to their scale, test loss, agreement of
   the per-example correctness records): the tolerance the device needs;
3. throughput: the MLP and CNN1d engine in float32 and bfloat16 (model-example-steps/s),
   and ``--chunk-size auto`` (``plan.suggest_chunk_size``) on the device;
4. Feldman & Zhang's MNIST setting (784-512-256-10 MLPs on 70% subsets of MNIST, 10
   epochs, SGD momentum 0.9, lr 0.1, batch 128): models per second and the projected time
   of 2,000 models;
5. spectra (``memlab.measures.spectra.analyze``) of a trained model on the device vs CPU.

    python benchmarks/gpu_check.py --out gpu_check          # on the GPU machine
    python benchmarks/gpu_check.py --tiny --out /tmp/check  # a minute on a CPU (tests)

On a machine without CUDA the device is the CPU: the equivalence section then compares the
CPU with itself (all differences 0), which is what the test suite checks runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from memlab.data import load
from memlab.engine.config import PopulationConfig, membership_mask
from memlab.engine.loop import train_chunk
from memlab.engine.modelspec import ModelSpec
from memlab.engine.precision import cpu_flags, cpu_model, native_bfloat16, resolve_compute_dtype
from memlab.engine.task import task_for
from memlab.io import atomic_write_bytes, atomic_write_json
from memlab.population.plan import flops_per_example_step, suggest_chunk_size

FZ_MODELS = 2000  # the models of the script's full run (the paper used 4,000)


class BatchNormCNN(nn.Module):
    """A user's 1-D CNN with BatchNorm (not a memlab model): the generic vmap path."""

    def __init__(self, input_shape, n_classes, channels: int = 8):
        super().__init__()
        length = input_shape[-1]
        self.body = nn.Sequential(
            nn.Unflatten(1, (1, length)),
            nn.Conv1d(1, channels, 5, stride=2, padding=2, bias=False),
            nn.BatchNorm1d(channels), nn.ReLU(), nn.Flatten(),
            nn.Linear(channels * ((length + 1) // 2), n_classes))

    def forward(self, x):
        return self.body(x)


class Report:
    """Sections of results, rewritten to JSON and Markdown after each one (atomically)."""

    def __init__(self, out: Path):
        self.out = out
        out.mkdir(parents=True, exist_ok=True)
        self.results: dict = {"complete": False, "sections": {}}
        self.markdown: list[str] = ["# memlab GPU check", ""]
        self.started = time.perf_counter()

    def add(self, name: str, data: dict, lines: list[str]) -> None:
        data = {**data, "elapsed_s": round(time.perf_counter() - self.started, 1)}
        self.results["sections"][name] = data
        self.markdown += [f"## {name}", "", *lines, "", f"(elapsed {data['elapsed_s']} s)", ""]
        self.write()
        print(f"[{data['elapsed_s']:7.1f} s] {name}: {json.dumps(data)[:300]}", flush=True)

    def write(self) -> None:
        atomic_write_json(self.out / "gpu_check.json", self.results)
        atomic_write_bytes(self.out / "gpu_check.md", "\n".join(self.markdown).encode())


def table(header: list[str], rows: list[list]) -> list[str]:
    def cell(value):
        return f"{value:.4g}" if isinstance(value, float) else str(value)
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]]


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def chunk(data, config: PopulationConfig, model, n_models: int, device: torch.device):
    task = task_for(data, config.task)
    kwargs = config.model_kwargs if not isinstance(model, type) else None
    spec = ModelSpec.resolve(model, kwargs, task)
    mask = membership_mask(config, task.n_examples(data, "train"), range(n_models))
    synchronize(device)
    result = train_chunk(task, data, config, spec, range(n_models), mask, device=device)
    synchronize(device)
    return result


def differences(cpu, dev) -> dict:
    """Largest CPU-vs-device differences of one chunk's weights and records."""
    weight_rel = max(float(np.abs(cpu.weights[n] - dev.weights[n]).max()
                           / max(np.abs(cpu.weights[n]).max(), 1e-12)) for n in cpu.weights)
    out = {"weights_max_rel": weight_rel}
    for name in ("test_loss", "train_loss"):
        if name in cpu.arrays:
            out[f"{name}_max_abs"] = float(np.abs(cpu.arrays[name] - dev.arrays[name]).max())
    for name in ("test_correct", "train_correct", "test_acc"):
        if name in cpu.arrays and cpu.arrays[name].dtype == bool:
            out[f"{name}_agreement"] = float((cpu.arrays[name] == dev.arrays[name]).mean())
    return out


def rate(data, config, model, n_models, device, epochs: tuple[int, int]) -> dict:
    """Training throughput from two chunk runs of different length (their difference
    removes set-up and the final evaluation): model-example-steps per second."""
    seconds = []
    for n_epochs in epochs:
        started = time.perf_counter()
        result = chunk(data, dataclasses.replace(config, epochs=n_epochs), model, n_models,
                       device)
        seconds.append(time.perf_counter() - started)
    per_epoch = max((seconds[1] - seconds[0]) / (epochs[1] - epochs[0]), 1e-9)
    steps_per_epoch = result.model_example_steps / epochs[1]
    return {"rate": steps_per_epoch / per_epoch, "seconds_per_epoch": per_epoch,
            "overhead_s": max(seconds[0] - epochs[0] * per_epoch, 0.0),
            "compute_dtype": result.compute_dtype}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="gpu_check", help="folder for gpu_check.json/.md")
    parser.add_argument("--device", default="auto", help="auto (cuda if any) | cuda | cpu")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes (CPU test)")
    args = parser.parse_args(argv)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                          else ("cpu" if args.device == "auto" else args.device))
    tiny = args.tiny
    if device.type == "cpu":
        torch.set_num_threads(1)
    report = Report(Path(args.out))

    # 1. environment
    env = {"device": str(device), "torch": torch.__version__, "python": sys.version.split()[0],
           "cpu": cpu_model(), "threads": torch.get_num_threads(), "tiny": tiny,
           "cpu_flags": sorted(cpu_flags() & {"avx2", "fma", "avx512f", "avx512_bf16",
                                              "amx_bf16", "amx_tile"}),
           "native_bfloat16": native_bfloat16(device),
           "auto_compute_dtype": str(resolve_compute_dtype("auto", device))}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(gpu=props.name, capability=f"{props.major}.{props.minor}",
                   memory_gib=round(props.total_memory / 2**30, 1),
                   cuda=torch.version.cuda)
    report.add("environment", env, [f"- {k}: {v}" for k, v in env.items()])

    # 2. equivalence of every engine path, CPU vs device
    mnist1d = load("mnist1d")
    small = mnist1d.subset(np.arange(256 if tiny else 2000))
    try:
        from memlab.data.text import synthetic_corpus
    except ImportError:  # before the layout change of issue 14
        from memlab.text import synthetic_corpus
    documents = synthetic_corpus()
    paths = {
        "MLP fast path": (small, dict(model="mlp", model_kwargs={"hidden": [100, 100]}), "mlp"),
        "CNN1d": (small, dict(model="cnn1d"), "cnn1d"),
        "user module with BatchNorm": (small, dict(model="BatchNormCNN"), BatchNormCNN),
        "language model": (documents, dict(model="transformer", task="language_model",
                                           optimizer="adam", lr=3e-3, batch_size=32,
                                           subset_fraction=0.25), "transformer"),
    }
    rows, found = [], {}
    for title, (data, settings, model) in paths.items():
        n_models = 2 if tiny else 4
        config = PopulationConfig(n_models=n_models, epochs=1 if tiny else 2, **settings)
        cpu = chunk(data, config, model, n_models, torch.device("cpu"))
        dev = chunk(data, config, model, n_models, device)
        found[title] = differences(cpu, dev)
        rows.append([title, *[found[title].get(k, "") for k in
                              ("weights_max_rel", "test_loss_max_abs", "test_correct_agreement")]])
    report.add("equivalence", found, [
        f"Same chunk on the CPU and on {device} (fp32); largest differences found:", "",
        *table(["path", "weights max rel", "test loss max abs", "test correct agreement"],
               rows)])

    # 3. throughput fp32 / bf16, and chunk-size auto
    width_config = PopulationConfig(model="mlp", model_kwargs={"hidden": [100, 100]},
                                    n_models=4096, subset_fraction=0.5, batch_size=128)
    auto = suggest_chunk_size(mnist1d, width_config, str(device))
    through, rows = {"chunk_size_auto_mlp_mnist1d": auto}, []
    epochs = (1, 2)
    for title, settings, model in (("MLP 40-100-100-10", {"model_kwargs": {"hidden": [100, 100]}},
                                    "mlp"), ("CNN1d", {"model": "cnn1d"}, "cnn1d")):
        n_models = 2 if tiny else (min(auto, 512) if device.type == "cuda" else 32)
        if model == "cnn1d" and not tiny:
            n_models = min(n_models, 128 if device.type == "cuda" else 16)
        data = small if tiny else mnist1d
        for dtype in ("float32", "bfloat16"):
            config = PopulationConfig(**{"model": "mlp", **settings}, n_models=n_models,
                                      subset_fraction=0.5, batch_size=128, compute_dtype=dtype)
            measured = rate(data, config, model, n_models, device, epochs)
            through[f"{title} {dtype}"] = {**measured, "chunk": n_models}
            rows.append([title, dtype, n_models, measured["rate"] / 1e6,
                         measured["seconds_per_epoch"]])
    report.add("throughput", through, [
        f"`--chunk-size auto` for MLPs on MNIST-1D on {device}: {auto} models", "",
        *table(["model", "compute dtype", "chunk", "M model-example-steps/s", "s/epoch"],
               rows)])

    # 4. Feldman & Zhang's MNIST setting
    mnist = load("mnist")
    if tiny:
        mnist = mnist.subset(np.arange(500))
    fz = PopulationConfig(model="mlp", model_kwargs={"hidden": [512, 256]}, n_models=FZ_MODELS,
                          subset_fraction=0.7, epochs=10, batch_size=128, lr=0.1,
                          momentum=0.9)
    fz_auto = suggest_chunk_size(mnist, fz, str(device))
    fz_chunk = 2 if tiny else (min(fz_auto, 256) if device.type == "cuda" else 8)
    flops = flops_per_example_step(ModelSpec.resolve("mlp", fz.model_kwargs, task_for(mnist))
                                   .build(mnist.input_shape, 10), mnist.input_shape)
    fz_rows, fz_out = [], {"chunk_size_auto": fz_auto, "chunk": fz_chunk,
                           "flops_per_example_step": flops}
    for dtype in ("float32", "bfloat16"):
        config = dataclasses.replace(fz, compute_dtype=dtype, n_models=fz_chunk)
        measured = rate(mnist, config, "mlp", fz_chunk, device, epochs)
        n_chunks = -(-FZ_MODELS // fz_chunk)
        projected = n_chunks * (measured["overhead_s"] + 10 * measured["seconds_per_epoch"])
        models_per_s = FZ_MODELS / projected
        fz_out[dtype] = {**measured, "models_per_s": models_per_s,
                         "projected_2000_models_s": projected,
                         "tflops": measured["rate"] * flops / 1e12}
        fz_rows.append([dtype, fz_chunk, models_per_s, projected / 60,
                        measured["rate"] * flops / 1e12])
    report.add("feldman_zhang_mnist", fz_out, [
        f"784-512-256-10 MLPs, 70% of {mnist.n_train} MNIST images, 10 epochs, SGD 0.9, "
        f"lr 0.1, batch 128 on {device}; `--chunk-size auto`: {fz_auto}", "",
        *table(["compute dtype", "chunk", "models/s", "projected 2,000 models (min)",
                "TFLOP/s"], fz_rows)])

    # 5. spectra of a trained model on the device vs CPU
    from memlab.measures.spectra import analyze

    trained = chunk(mnist, dataclasses.replace(fz, n_models=1, epochs=1 if tiny else 2),
                    "mlp", 1, device)
    state = {name: torch.as_tensor(w[0]) for name, w in trained.weights.items()}
    spectra, alphas = {}, {}
    for where in ("cpu", str(device)):
        started = time.perf_counter()
        frame = analyze(state, device=where, randomize=False)
        spectra[f"{where}_seconds"] = time.perf_counter() - started
        alphas[where] = frame["alpha"].to_numpy(dtype=float)
    spectra["alpha_cpu"] = alphas["cpu"].tolist()
    spectra["alpha_max_abs_difference"] = float(np.nanmax(np.abs(alphas["cpu"]
                                                                 - alphas[str(device)])))
    report.add("spectra", spectra, [
        f"alpha per layer (CPU): {np.round(alphas['cpu'], 3).tolist()}; largest |alpha_cpu - "
        f"alpha_{device}|: {spectra['alpha_max_abs_difference']:.2g}; "
        f"seconds: CPU {spectra['cpu_seconds']:.2f}, {device} "
        f"{spectra[f'{device}_seconds']:.2f}"])

    report.results["complete"] = True
    report.write()
    print(f"wrote {report.out / 'gpu_check.json'} and {report.out / 'gpu_check.md'}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
