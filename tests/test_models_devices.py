from pathlib import Path

import numpy as np
import pytest
import torch

from bavos.config import SegmentConfig, TrainConfig
from bavos.errors import ConfigError
from bavos.models.devices import precision_context, resolve_device


def test_background_threads_on_a_gpu_only_unless_asked() -> None:
    """On a 2-core CPU the threads only compete with the model for the cores; on a GPU they keep the device busy
    (both measured: docs/performance.md, "On a GPU")."""
    assert SegmentConfig().for_device("cuda").background is True
    assert SegmentConfig().for_device("cpu").background is False
    assert SegmentConfig(background=True).for_device("cpu").background is True
    assert SegmentConfig(background=False).for_device("cuda").background is False
    gpu, cpu = SegmentConfig().for_device("cuda"), SegmentConfig().for_device("cpu")
    assert (gpu.resolution, gpu.max_key_frames, gpu.stride) == ((320, 480), 30, 1)  # the paper's
    assert (cpu.resolution, cpu.max_key_frames, cpu.stride) == ((160, 240), 10, 2)
    given = SegmentConfig(resolution=(64, 96), max_key_frames=0, stride=1).for_device("cpu")
    assert (given.resolution, given.max_key_frames, given.stride) == ((64, 96), 0, 1)


def test_float32_is_the_default_everywhere() -> None:
    assert SegmentConfig().precision == "float32"
    assert TrainConfig().precision == "float32"


def test_float32_on_cuda_turns_tensorfloat32_off_and_restores_it() -> None:
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        with precision_context(torch.device("cuda"), "float32"):
            assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def test_threads_overlapping_strict_float32_keep_it_until_the_last_ends() -> None:
    """Read from the code in a trial: each block saved and restored TF32 itself, so a thread ending first switched
    it back on under another still running (two threads sharing a Segmenter on CUDA: the second one's float32
    products in TF32). The switches are process-wide flags, set without a GPU."""
    import threading

    from bavos.models.devices import strict_float32

    cuda = torch.device("cuda")
    flags = (torch.backends.cuda.matmul, torch.backends.cudnn)
    saved = [f.allow_tf32 for f in flags]
    entered, first_done, seen = threading.Barrier(2), threading.Event(), {}

    def first() -> None:
        with strict_float32(cuda):
            entered.wait()
        first_done.set()

    def second() -> None:
        with strict_float32(cuda):
            entered.wait()
            first_done.wait()
            seen["inside"] = [f.allow_tf32 for f in flags]

    try:
        for f in flags:
            f.allow_tf32 = True  # the process's own setting
        threads = [threading.Thread(target=first), threading.Thread(target=second)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert seen["inside"] == [False, False]  # the first block's end left it off
        assert [f.allow_tf32 for f in flags] == [True, True]  # the last one's restored it
    finally:
        for f, value in zip(flags, saved, strict=True):
            f.allow_tf32 = value


@pytest.mark.parametrize(
    ("precision", "dtype"), [("float32", torch.float32), ("bf16", torch.bfloat16), ("fp16", torch.float16)]
)
def test_precision_context_dtypes(precision: str, dtype: torch.dtype) -> None:
    x, w = torch.randn(4, 8), torch.randn(8, 3)
    with precision_context(torch.device("cpu"), precision):
        assert (x @ w).dtype == dtype


def test_bad_precision_and_device() -> None:
    with pytest.raises(ConfigError, match="--precision must be one of float32, bf16, fp16"):
        SegmentConfig(precision="auto")
    with pytest.raises(ConfigError, match="--precision must be one of"):
        TrainConfig(precision="fp8")
    with pytest.raises(ConfigError, match="--precision must be one of"), precision_context(torch.device("cpu"), "x"):
        pass
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA device"):
            resolve_device("cuda")
    assert resolve_device("cpu") == torch.device("cpu")


def test_a_cuda_device_always_has_its_index(monkeypatch: pytest.MonkeyPatch) -> None:
    """torch.cuda.set_device(torch.device("cuda")) raises ValueError: bavos train on a GPU stopped there."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda") == resolve_device("auto") == torch.device("cuda", 1)
    assert resolve_device("cuda", 3) == torch.device("cuda", 1)  # LOCAL_RANK modulo the devices
    assert resolve_device("cuda", 0).index == 0


# On CUDA, each compared with the CPU on the same inputs (skipped without CUDA; ``pytest -m gpu`` runs them).


def _labels(device: str, weights: Path, frames: np.ndarray) -> np.ndarray:
    import bavos

    segmenter = bavos.Segmenter.from_checkpoint(
        "none",
        backbone="bavos_test_vit",
        backbone_weights=str(weights),
        device=device,
        resolution=(64, 96),
        key_ratio=4,
        max_objects=0,
        stride=1,
        max_key_frames=30,
    )
    with segmenter(frames) as result:
        return result.labels


@pytest.mark.gpu
def test_cuda_partition_matches_the_cpu(sharp_weights: Path) -> None:
    """float32 (TensorFloat-32 off): the same partition on >= 99.9 % of the tokens, even with a process-wide TF32."""
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    from conftest import clip_frames

    from bavos.evaluation.metrics import matched_share

    frames = np.stack(clip_frames(13, 64, 96))
    cpu = _labels("cpu", sharp_weights, frames)
    saved = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high")  # a process that allows TF32: bavos's float32 must not use it
    try:
        cuda = _labels("cuda", sharp_weights, frames)
    finally:
        torch.set_float32_matmul_precision(saved)
    assert cuda.shape == cpu.shape and len(np.unique(cpu)) > 3
    assert matched_share(cpu, cuda) >= 0.999


def _step(device: str, clips: Path, cache: Path) -> tuple[float, dict[str, torch.Tensor]]:
    from bavos.config import ModelConfig, train_config
    from bavos.models.backbone import build_backbone
    from bavos.training.clips import ClipSamples, cache_clips, find_clips
    from bavos.training.train import batch_losses, new_correlator

    cfg = train_config(batch_size=2, resolution=(128, 160), workers=0, device=device, cache=str(cache))
    torch.manual_seed(0)
    backbone = build_backbone("bavos_test_vit", "none").to(device)
    model = new_correlator(32, ModelConfig(backbone="bavos_test_vit", checkpoint="none", correlator_heads=4), cfg).to(
        device
    )
    model.eval()  # no attention dropout: its random draws differ between devices
    data = cache_clips(find_clips(clips), cache, cfg.resolution, 3)
    samples = ClipSamples(data, 3, cfg.gap, seed=5)
    frames = torch.stack([samples[i] for i in range(2)]).to(device)
    with precision_context(torch.device(device), "float32"):
        losses = batch_losses(backbone, model, frames, cfg, torch.Generator().manual_seed(7))
    losses.total.backward()
    return float(losses.total.detach()), {n: p.grad.detach().cpu() for n, p in model.named_parameters()}


@pytest.fixture(scope="module")
def step_clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from conftest import write_clip

    root = tmp_path_factory.mktemp("clips")
    for i in range(2):
        write_clip(root / f"clip{i}.mp4", n=9, height=64, width=96)
    return root


@pytest.mark.gpu
def test_cuda_training_step_matches_the_cpu(step_clips: Path, tmp_path: Path) -> None:
    """One training step's loss and every gradient within 1e-5 relative (float32, augmentation drawn on the CPU)."""
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    loss_cpu, grads_cpu = _step("cpu", step_clips, tmp_path / "cache")
    loss_cuda, grads_cuda = _step("cuda", step_clips, tmp_path / "cache")
    assert loss_cuda == pytest.approx(loss_cpu, rel=1e-5)
    for name, g in grads_cpu.items():
        assert float((grads_cuda[name] - g).norm()) <= 1e-5 * float(g.norm()) + 1e-12, name


@pytest.mark.gpu
@pytest.mark.parametrize(("saved_on", "loaded_on"), [("cuda", "cpu"), ("cpu", "cuda")])
def test_a_checkpoint_saved_on_one_device_loads_on_the_other(tmp_path: Path, saved_on: str, loaded_on: str) -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    from bavos.models.correlator import Correlator, load_correlator, save_checkpoint

    torch.manual_seed(0)
    model = Correlator(32, 4).to(saved_on)
    save_checkpoint(tmp_path / "c.pt", model, {"correlator_heads": 4, "backbone": "bavos_test_vit"}, step=1)
    loaded = load_correlator(tmp_path / "c.pt", dim=32, heads=4).to(loaded_on)
    x = torch.randn(1, 6, 32)
    with precision_context(torch.device(loaded_on), "float32"), torch.no_grad():
        got = loaded.eval()(x.to(loaded_on))[0].cpu()
        want = model.eval()(x.to(saved_on))[0].cpu()
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_the_kernels_run_on_cuda_unless_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """bavos's Triton kernels: on CUDA by default, not with BAVOS_KERNELS=0; never on a CPU unless a test asks."""
    from bavos.models.devices import kernels, triton_installed, use_kernels

    cuda, cpu = torch.device("cuda", 0), torch.device("cpu")
    monkeypatch.delenv("BAVOS_KERNELS", raising=False)
    assert use_kernels(cuda) == triton_installed() and not use_kernels(cpu)
    monkeypatch.setenv("BAVOS_KERNELS", "0")
    assert not use_kernels(cuda)
    with kernels(True):
        assert use_kernels(cpu) == triton_installed()
    with kernels(False):
        monkeypatch.setenv("BAVOS_KERNELS", "1")
        assert not use_kernels(cuda)


@pytest.mark.parametrize("version", [1, 2])
def test_a_cgroup_s_memory_limit_bounds_what_the_run_may_take(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, version: int
) -> None:
    """A trial's finding: only MemAvailable was read, so in a Slurm job's or a container's cgroup the check passed
    and the kernel's OOM killer stopped the run instead. The least room over the cgroup and those above it counts,
    inactive file pages as free; "max" (v2) or v1's huge number is no limit."""
    from bavos.models import costs

    proc = tmp_path / "cgroup"
    if version == 2:
        root = tmp_path / "sys"
        (root / "job" / "step").mkdir(parents=True)
        (root / "cgroup.controllers").write_text("memory\n")
        proc.write_text("0::/job/step\n")
        files = {"job": ("3221225472", "2147483648"), "job/step": ("max", "2000000000")}
        stat, limit_name, use_name = "inactive_file", "memory.max", "memory.current"
    else:
        root = tmp_path / "sys"
        (root / "memory" / "job" / "step").mkdir(parents=True)
        proc.write_text("4:memory:/job/step\n3:cpuset:/\n")
        files = {"memory/job": ("3221225472", "2147483648"), "memory/job/step": ("9223372036854771712", "2000000000")}
        stat, limit_name, use_name = "total_inactive_file", "memory.limit_in_bytes", "memory.usage_in_bytes"
    for folder, (limit, use) in files.items():
        (root / folder / limit_name).write_text(limit + "\n")
        (root / folder / use_name).write_text(use + "\n")
    (root / list(files)[0] / "memory.stat").write_text(f"cache 1\n{stat} 104857600\n")
    monkeypatch.setattr(costs, "CGROUP_ROOT", root)
    monkeypatch.setattr(costs, "PROC_CGROUP", proc)
    assert costs._cgroup_room() == 3221225472 - 2147483648 + 104857600  # 1.1 GB: the job's, not the step's
    monkeypatch.setattr(costs, "_proc_bytes", lambda path, field: 64 * 2**30 if field == "MemAvailable" else 0)
    assert costs.host_room() == (3221225472 - 2147483648 + 104857600, "its cgroup's memory limit leaves")
    proc.write_text("0::/\n" if version == 2 else "4:memory:/\n")
    for folder in files:
        (root / folder / limit_name).write_text("max\n" if version == 2 else "9223372036854771712\n")
    assert costs._cgroup_room() is None and costs.host_room() == (64 * 2**30, "this machine has")


def test_ulimit_v_is_read_and_a_refusal_names_it(tmp_path: Path) -> None:
    """Under ``ulimit -v`` a run died midway ("can't allocate memory", "resource temporarily unavailable"): the
    room it leaves counts, and a refusal says which bound it met."""
    import subprocess
    import sys

    code = (
        "import resource; from bavos.models import costs; "
        "resource.setrlimit(resource.RLIMIT_AS, (costs._proc_bytes('/proc/self/status', 'VmSize') + 2**30, "
        "resource.RLIM_INFINITY)); room, said = costs.host_room(); print(room, said)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split(
        maxsplit=1
    )
    assert 0.9 * 2**30 < int(out[0]) <= 2**30 and out[1].strip() == "ulimit -v leaves"


def test_a_refusal_names_the_caches_when_they_hold_most_of_the_need(monkeypatch: pytest.MonkeyPatch) -> None:
    """A trial: --attention-cache 200000 kept 193 GB and the refusal named --resolution, --max-key-frames, --stride
    and --batch-size, but not the option that asked for it. Sizes: "3 kB" for what a killed run left, not "1 MB"."""
    from bavos.models import costs

    monkeypatch.setattr(costs, "available_bytes", lambda device: 20 * 2**30)
    monkeypatch.setattr(costs, "resident_bytes", lambda: 0)
    monkeypatch.setattr(costs, "host_room", lambda: (20 * 2**30, "this machine has"))
    cpu = torch.device("cpu")
    big = costs.Estimate({"backbone": 1.0}, 275 * 2**30, rows_kept=193 * 2**30, queries_kept=10 * 2**30)
    assert costs.over_budget(big, cpu) == (
        "needs about 275.0 GB more memory, this machine has 20.0 GB free; lower --attention-cache or --query-cache "
        "(kept: 193.0 GB and 10.0 GB), or --resolution, bound the key set with --max-key-frames, raise --stride or "
        "lower --batch-size"
    )
    on_disk = costs.Estimate({"backbone": 1.0}, 100 * 2**30, queries_kept=90 * 2**30, queries_on_disk=True)
    assert costs.over_budget(on_disk, cpu).endswith(f"free; {costs.SEGMENT_OPTIONS}")  # a file holds them, not memory
    assert [costs.size_text(n) for n in (3455, 5 * 2**20, 1.5 * 2**30)] == ["3 kB", "5 MB", "1.5 GB"]
