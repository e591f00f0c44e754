import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import CUDA, TINY, on, write_clip

from bavos.config import ModelConfig, TrainConfig, train_config
from bavos.errors import ConfigError, UsageError
from bavos.models.backbone import build_backbone
from bavos.models.correlator import Correlator, load_correlator
from bavos.training import train as train_mod
from bavos.training.clips import ClipSamples, cache_clips, find_clips
from bavos.training.train import batch_losses, make_optimizer, new_correlator, train

MODEL = ModelConfig(backbone="bavos_test_vit", backbone_weights="none", checkpoint="none", correlator_heads=4)
TRAIN_ARGS = [
    "--backbone",
    "bavos_test_vit",
    "--backbone-weights",
    "none",
    "--resolution",
    "128",
    "160",
    "--device",
    "cpu",
    "--workers",
    "0",
]


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("clips")
    for i in range(3):
        write_clip(root / f"clip{i}.mp4", n=8 + 2 * i, height=64, width=96)
    return root


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


def _cfg(cache: Path, **kw: object) -> TrainConfig:
    base = {
        "steps": 4,
        "batch_size": 2,
        "lr": 1e-3,
        "resolution": (128, 160),
        "workers": 0,
        "log_every": 1,
        "checkpoint_every": 2,
        "device": "cpu",
        "cache": str(cache),
    }
    return train_config(**{**base, **kw})


def test_presets_and_overrides() -> None:
    assert (train_config().batch_size, train_config().lr, train_config().steps) == (8, 1e-5, 60_000)
    paper = train_config("paper")
    assert (paper.batch_size, paper.lr, paper.steps) == (16, 1e-4, 30_000)
    assert train_config("paper", lr=3e-5).lr == 3e-5
    with pytest.raises(ConfigError, match="preset"):
        train_config("nope")
    saved = {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(train_config(steps=10)).items()}
    assert train_config(saved=saved, workers=1).workers == 1  # runtime options may change on resume
    with pytest.raises(ConfigError, match="--gap 2 differs"):
        train_config(saved=saved, gap=2)
    with pytest.raises(UsageError) as refused:  # it named counts no option sets
        TrainConfig(resolution=(64, 96)).check_tokens(8)
    assert str(refused.value) == (
        "--resolution 64 96 gives 96 patches of 8x8 pixels a frame; the losses sample 200 a frame: give at least "
        "--resolution 96 144"
    )
    TrainConfig(resolution=(96, 144)).check_tokens(8)


def test_optimizer_holds_the_correlator_only_with_decay_on_matrices() -> None:
    cfg = train_config(steps=100, lr=1e-4)
    model = Correlator(384, 8)
    optimizer, scheduler = make_optimizer(model, cfg)
    decayed, plain = optimizer.param_groups
    assert sum(p.numel() for g in optimizer.param_groups for p in g["params"]) == 1_773_312
    assert decayed["weight_decay"] == 0.1 and plain["weight_decay"] == 0.0
    assert {p.ndim for p in decayed["params"]} == {2} and {p.ndim for p in plain["params"]} == {1}
    lrs = []
    for _ in range(100):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[0] == pytest.approx(1e-4) and lrs[50] == pytest.approx(1e-6 + 0.5 * (1e-4 - 1e-6))
    assert lrs[99] == pytest.approx(1e-6 + 0.5 * (1e-4 - 1e-6) * (1 + math.cos(math.pi * 99 / 100)))


def _fixed_batch(clips: Path, cache: Path, cfg: TrainConfig) -> torch.Tensor:
    data = cache_clips(find_clips(clips), cache, cfg.resolution, 3)
    samples = ClipSamples(data, 3, cfg.gap, seed=123)
    return torch.stack([samples[i] for i in range(3)])


def test_training_lowers_the_loss_on_a_fixed_batch(clips: Path, cache: Path, tmp_path: Path) -> None:
    cfg = _cfg(cache, steps=25, lr=3e-3, log_every=5, checkpoint_every=25)
    backbone = build_backbone("bavos_test_vit", "none")
    frames = _fixed_batch(clips, cache, cfg)

    def loss(model: Correlator) -> float:
        with torch.no_grad():
            return float(batch_losses(backbone, model.eval(), frames, replace_clean(cfg)).total)

    before = loss(new_correlator(32, MODEL, cfg))
    result = train(clips, tmp_path / "run", MODEL, cfg)
    after = loss(load_correlator(result.checkpoint, dim=32))
    assert after < before - 0.05, (before, after)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [5, 10, 15, 20, 25]
    assert {"loss", "semantic_pos", "semantic_neg", "motion", "lr", "steps_per_s", "data_wait"} <= set(records[0])


def replace_clean(cfg: TrainConfig) -> TrainConfig:
    from dataclasses import replace

    return replace(cfg, loss_attention="clean")


@pytest.mark.parametrize("precision", ["float32", "fp16"])
def test_resume_repeats_an_uninterrupted_run(
    clips: Path, cache: Path, tmp_path: Path, precision: str, device: str
) -> None:
    cfg = _cfg(cache, steps=5, precision=precision, device=device)
    train(clips, tmp_path / "straight", MODEL, cfg)
    first = train(clips, tmp_path / "split", MODEL, cfg, until=3)
    assert first.step == 3
    with (tmp_path / "split" / "metrics.jsonl").open("a") as f:  # a line written after the checkpoint was lost
        f.write(json.dumps({"step": 4, "loss": 9.0}) + "\n")
    train(clips, tmp_path / "split", MODEL, cfg, resume=True)
    a = torch.load(tmp_path / "straight" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "split" / "last.pt", weights_only=True)
    assert a["step"] == b["step"] == 5
    assert ("scaler" in a) == ("scaler" in b) == (precision == "fp16")  # fp16's loss scale is saved and restored
    if precision == "fp16":
        assert a["scaler"] == b["scaler"]
    # bit for bit on the CPU; CUDA's backward adds some gradients in the order its threads finish (indexing,
    # gathers), so there the two runs agree to float rounding
    same = torch.equal if device == "cpu" else lambda x, y: torch.allclose(x, y, rtol=1e-4, atol=1e-6)
    for key in a["model"]:
        assert same(a["model"][key], b["model"][key]), key
    for key, state in a["optimizer"]["state"].items():
        assert same(state["exp_avg_sq"], b["optimizer"]["state"][key]["exp_avg_sq"])
    lines = [json.loads(x) for x in (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()]
    straight = [json.loads(x) for x in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2, 3, 4, 5]
    losses = [r["loss"] for r in straight]
    assert [r["loss"] for r in lines] == (losses if device == "cpu" else pytest.approx(losses, rel=1e-4))
    assert sorted(p.name for p in (tmp_path / "split").glob("step-*.pt")) == [
        "step-0000002.pt",
        "step-0000004.pt",
        "step-0000005.pt",
    ]


def test_nan_stops_and_keeps_the_last_good_checkpoint(
    clips: Path, cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run_cli
) -> None:
    real = train_mod.clip_losses
    calls = []

    def poisoned(*args: object):
        losses = real(*args)
        calls.append(1)
        if len(calls) == 3:
            losses.motion = losses.motion * float("nan")
        return losses

    monkeypatch.setattr(train_mod, "clip_losses", poisoned)
    out = tmp_path / "run"
    res = run_cli(
        "train",
        clips,
        "-o",
        out,
        *TRAIN_ARGS,
        "--steps",
        "6",
        "--batch-size",
        "1",
        "--checkpoint-every",
        "2",
        "--cache",
        cache,
        "-q",
    )
    assert res.code == 1
    assert res.err.strip().splitlines()[-1] == (
        f"bavos: error: the loss became nan at step 3 (semantic {_sem(res.err)}, motion nan); training stopped and "
        f"the last good checkpoint is {out / 'last.pt'} (step 2); lower --lr or check the clips"
    )
    assert torch.load(out / "last.pt", weights_only=True)["step"] == 2


def _sem(err: str) -> str:
    return err.split("(semantic ")[1].split(",")[0]


def test_interrupt_saves_the_steps_done(
    clips: Path, cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = train_mod.batch_losses
    calls = []

    def interrupted(*args: object, **kw: object):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real(*args, **kw)

    class Said(train_mod.TrainEvents):
        def __init__(self) -> None:
            self.warnings: list[str] = []

        def warn(self, message: str) -> None:
            self.warnings.append(message)

    monkeypatch.setattr(train_mod, "batch_losses", interrupted)
    said = Said()
    with pytest.raises(KeyboardInterrupt):
        train(clips, tmp_path / "run", MODEL, _cfg(cache, steps=10, checkpoint_every=100), events=said)
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=True)["step"] == 3
    assert said.warnings[-1] == (
        f"stopped after step 3, saved in {tmp_path / 'run' / 'last.pt'}: go on with the same command and --resume"
    )


def test_cli_train_then_segment_with_the_checkpoint(clips: Path, cache: Path, tmp_path: Path, run_cli) -> None:
    run = tmp_path / "run"
    res = run_cli("train", clips, "-o", run, *TRAIN_ARGS, "--steps", "2", "--batch-size", "1", "--cache", cache)
    assert res.code == 0, res.err
    assert res.out.strip() == f"{run / 'last.pt'}: step 2 of 2, loss {_last_loss(run):.4f} ({_secs(res.out)} s)"
    assert "training on 3 clips (0 skipped)" in res.err
    decode = next(line for line in res.err.splitlines() if ": decode " in line)  # named, with a rate in clips/s
    pattern = rf"bavos: {clips.name}: decode 3/3 clips \(100 %\), [0-9.]+ clips/s, done in .*"
    assert re.fullmatch(pattern, decode), decode
    again = run_cli(
        "train", clips, "-o", run, *TRAIN_ARGS, "--steps", "2", "--batch-size", "1", "--cache", cache, "--resume"
    )  # a finished run: said, nothing redone (it printed "steps 3..2")
    assert again.code == 0 and again.out.strip() == (
        f"{run / 'last.pt'}: step 2 of 2: the run had already finished; nothing to do (to train further, start a new "
        f"run from it with --init-from {run / 'last.pt'})"
    )
    assert "3..2" not in again.err and "decode" not in again.err
    folder = run_cli("segment", clips / "clip0.mp4", "-o", tmp_path / "seg", *TINY, "--checkpoint", run, "-q")
    assert folder.code == 1 and folder.err.strip() == (  # it said "checkpoint not found"
        f"bavos: error: {run}: is a folder, not a checkpoint file (a training run's: give its last.pt)"
    )
    further = run_cli(  # what the line says works (it said to raise --steps, which --resume refuses)
        "train", clips, "-o", tmp_path / "further", *TRAIN_ARGS, "--steps", "1", "--batch-size", "1", "--cache", cache,
        "--init-from", run / "last.pt", "-q",
    )  # fmt: skip
    assert further.code == 0, further.err
    quiet = run_cli(
        "train",
        clips,
        "-o",
        tmp_path / "run2",
        *TRAIN_ARGS,
        "--steps",
        "1",
        "--batch-size",
        "1",
        "--cache",
        cache,
        "-q",
    )
    assert quiet.code == 0 and quiet.err == "" and quiet.out == ""  # -q: not even the random-weights warning
    config = json.loads((run / "config.json").read_text())
    assert config["TrainConfig"]["preset"] == "release" and config["TrainConfig"]["steps"] == 2
    data = json.loads((run / "data.json").read_text())
    assert data["clips"] == 3 and data["skipped"] == 0 and data["frames"] == 8 + 10 + 12
    seg = run_cli(
        "segment",
        clips / "clip0.mp4",
        "-o",
        tmp_path / "out",
        *TINY,
        "--backbone-weights",
        "none",
        "--checkpoint",
        run / "last.pt",
        "-q",
        "--no-overlay",
    )
    assert seg.code == 0, seg.err
    summary = json.loads((tmp_path / "out" / "clip0" / "summary.json").read_text())
    assert summary["config"]["ModelConfig"]["checkpoint"] == str(run / "last.pt")
    trained = torch.load(run / "last.pt", weights_only=True)["model"]  # the same block in the release's layout
    release = {f"temporal_transformer.0.{k}": v for k, v in trained.items()}
    torch.save({"iteration": 2, "model_state_dict": release}, tmp_path / "release.pth")
    seg = run_cli(
        "segment",
        clips / "clip0.mp4",
        "-o",
        tmp_path / "out2",
        *TINY,
        "--backbone-weights",
        "none",
        "--checkpoint",
        tmp_path / "release.pth",
        "-q",
        "--no-overlay",
    )
    assert seg.code == 0, seg.err
    seg = run_cli(
        "segment", clips / "clip0.mp4", "-o", tmp_path / "out3", *TINY, "--checkpoint", run / "last.pt", "--no-overlay"
    )  # the backbone's random weights come from the checkpoint: the warning says so
    assert seg.code == 0, seg.err
    assert (
        f"bavos: warning: --checkpoint {run / 'last.pt'}: that checkpoint was trained on a backbone with random "
        "weights (it records backbone weights 'none'), so this run uses random weights too: masks are meaningless"
    ) in seg.err and "--backbone-weights none:" not in seg.err
    masks = sorted((tmp_path / "out" / "clip0" / "masks").iterdir())
    assert [m.read_bytes() for m in masks] == [
        m.read_bytes() for m in sorted((tmp_path / "out2" / "clip0" / "masks").iterdir())
    ]
    again = run_cli("train", clips, "-o", run, *TRAIN_ARGS)
    assert again.code == 2 and "already holds a training run; continue it with --resume" in again.err
    resumed = run_cli("train", clips, "-o", run, "--resume", "--steps", "3")
    assert resumed.code == 2 and "--steps 3 differs from the run's 2" in resumed.err


def _last_loss(run: Path) -> float:
    return json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["loss"]


def _secs(out: str) -> str:
    return out.rsplit("(", 1)[1].split(" s)")[0]


def test_resume_refuses_other_clips(clips: Path, cache: Path, tmp_path: Path, run_cli) -> None:
    """A run goes on with the clips it trained on, wherever their folder is now; other clips are refused before the
    run's data.json is replaced (it was, and the run went on with them)."""
    args = [*TRAIN_ARGS, "--steps", "3", "--batch-size", "1", "--cache", cache, "-q"]
    run = tmp_path / "run"
    first = run_cli("train", clips, "-o", run, *args[:-1], "--until", "1", "--log-every", "1")
    assert first.code == 0 and "steps 1..1 of 3 (--until 1)" in first.err  # it said "steps 1..1", then "step 1/1"
    assert re.search(r"step 1/3 loss .* left to step 1\n", first.err), first.err
    data = (run / "data.json").read_bytes()
    other = tmp_path / "other"
    other.mkdir()
    for name in ("clip0.mp4", "clip1.mp4"):
        shutil.copy(clips / name, other / name)
    fewer = run_cli("train", other, "-o", run, "--resume", "--until", "2", "-q")
    assert fewer.code == 2 and fewer.err.strip() == (
        f"bavos: error: --resume: {other} does not hold the clips the run trained on (clip2.mp4 is missing: the run "
        f"trained on {clips / 'clip2.mp4'}; {run / 'data.json'} lists them): resume with the run's clips, or start a "
        f"new run from it with --init-from {run / 'last.pt'}"
    )
    (other / "clip2.mp4").write_bytes((clips / "clip0.mp4").read_bytes())  # the right name, another length
    shorter = run_cli("train", other, "-o", run, "--resume", "--until", "2", "-q")
    assert shorter.code == 2 and f"({other / 'clip2.mp4'} is not the clip the run trained on: " in shorter.err
    recorded = json.loads(data)  # a run that recorded no sizes nor digests: told by the frames, once decoded
    unrecorded = [{**e, "bytes": None, "digest": None} for e in recorded["used"]]
    (run / "data.json").write_text(json.dumps({**recorded, "used": unrecorded}))
    shorter = run_cli("train", other, "-o", run, "--resume", "--until", "2", "-q")
    assert shorter.code == 2 and f"({other / 'clip2.mp4'} has 8 frames, the run's had 12;" in shorter.err
    (run / "data.json").write_bytes(data)
    write_clip(other / "clip2.mp4", n=12, height=80, width=96)  # the right name and length, another video
    replaced = run_cli("train", other, "-o", run, "--resume", "--until", "2", "-q")
    assert replaced.code == 2 and f"({other / 'clip2.mp4'} is not the clip the run trained on: " in replaced.err
    (other / "extra").mkdir()
    shutil.copy(clips / "clip0.mp4", other / "extra" / "clip3.mp4")
    shutil.copy(clips / "clip2.mp4", other / "clip2.mp4")
    more = run_cli("train", other, "-o", run, "--resume", "--until", "2", "-q")
    assert more.code == 2 and f"({other / 'extra' / 'clip3.mp4'} is not one of them;" in more.err
    assert (run / "data.json").read_bytes() == data
    (other / "extra" / "clip3.mp4").unlink()
    moved = run_cli("train", other, "-o", run, "--resume", "--until", "2", "-q")  # the same clips, moved: goes on
    assert moved.code == 0, moved.err
    assert torch.load(run / "last.pt", weights_only=True)["step"] == 2


def test_cli_errors_are_one_line(tmp_path: Path, run_cli, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    res = run_cli("train", empty, "-o", tmp_path / "run", *TRAIN_ARGS)
    assert res.code == 1 and res.err.strip().splitlines()[-1] == (
        f"bavos: error: {empty}: holds no videos (.3gp, .asf, .avi, .dv, .f4v, .flv, .gif, .m2ts, .m4v, .mkv, .mov, "
        ".mp4, .mpeg, .mpg, .mts, .mxf, .nut, .ogv, .ts, .vob, .webm, .wmv, .y4m) and no folders of frames"
    )
    assert not (tmp_path / "run").exists()  # a run that could not start leaves no folder
    res = run_cli("train", empty, "-o", tmp_path / "none", "--resume")
    assert res.code == 2 and "nothing to resume (last.pt not found)" in res.err
    theirs = tmp_path / "theirs"  # a trial: "start the run without --resume", which was then refused for these
    theirs.mkdir()
    (theirs / "notes.txt").write_text("mine")
    res = run_cli("train", empty, "-o", theirs, "--resume")
    assert res.code == 2 and res.err.strip().splitlines()[-1] == (
        f"bavos: error: {theirs}: nothing to resume (last.pt not found), and it holds files bavos did not write "
        "(notes.txt): choose another -o"
    )
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.mp4").write_text("not a video")
    res = run_cli("train", bad, "-o", tmp_path / "run2", *TRAIN_ARGS)
    assert res.code == 1 and res.err.strip().splitlines()[-1] == (
        f"bavos: error: {bad}: no usable clips: all 1 were skipped"
    )
    assert "x.mp4: skipped: not a video FFmpeg can read" in res.err
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    res = run_cli("train", bad, "-o", tmp_path / "run3", *TRAIN_ARGS, "--batch-size", "3")
    assert res.code == 1 and "--batch-size 3 must be divisible by the 2 processes" in res.err


@pytest.mark.parametrize(
    ("given", "said"),
    [
        (["--seed", "-1"], "--seed must be from 0 to 2**64 - 1, got -1"),
        (["--backbone", "resnet50"], "backbone 'resnet50' is not a plain timm VisionTransformer: give a ViT such as"),
        (["--until", "0"], "--until must be at least 1, got 0"),
        (["--device", "cuda"], "--device cuda was asked for but no CUDA device is available; use --device cpu"),
        (["CLIPS=FILE"], "not a folder; give a folder of videos and/or frame folders"),
        (["CLIPS=MISSING"], "no such folder"),
        (["--lr", "-1"], "--lr must be a finite number above 0, got -1"),  # "need 0 <= min lr <= --lr": no such option
        (["--lr", "1e-7"], "--lr must be at least 1e-06, where its cosine schedule ends, got 1e-07"),
    ],
)
def test_wrong_options_are_usage_errors_that_leave_nothing(
    clips: Path, tmp_path: Path, run_cli, given: list[str], said: str
) -> None:
    """From a newcomer's trial: each was a traceback, "internal error" or exit 1 (a DataLoader worker's numpy error
    for --seed -1; timm's TypeError for a ResNet); --until 0 said a run that never started "had already finished"."""
    if given == ["--device", "cuda"] and CUDA:
        pytest.skip("there is a GPU here")
    folder = {"CLIPS=FILE": clips / "clip0.mp4", "CLIPS=MISSING": tmp_path / "gone"}.get(given[0], clips)
    options = [] if given[0].startswith("CLIPS=") else given
    result = run_cli("train", folder, "-o", tmp_path / "run", *TRAIN_ARGS, *options)
    lines = [line for line in result.err.strip().splitlines() if "random weights" not in line]  # TRAIN_ARGS' warning
    assert result.code == 2 and len(lines) == 1 and lines[0].startswith("bavos: error: ") and said in lines[0], lines
    assert not (tmp_path / "run").exists()


def test_until_past_the_last_step_and_a_resume_already_past_it_are_said(
    clips: Path, cache: Path, tmp_path: Path, run_cli
) -> None:
    run, args = tmp_path / "run", [*TRAIN_ARGS, "--batch-size", "1", "--cache", cache]
    past = run_cli("train", clips, "-o", run, *args, "--steps", "2", "--until", "5")
    assert past.code == 0 and "bavos: warning: --until 5 is past the run's last step, 2: it stops there" in past.err
    assert torch.load(run / "last.pt", weights_only=True)["step"] == 2
    run = tmp_path / "run2"
    assert run_cli("train", clips, "-o", run, *args, "--steps", "4", "--until", "2", "-q").code == 0
    behind = run_cli("train", clips, "-o", run, "--resume", "--until", "1")
    assert behind.code == 0 and behind.out.strip() == (
        f"{run / 'last.pt'}: step 2 of 4, already past --until 1; nothing to do"
    )


def test_a_last_pt_of_the_users_is_not_taken_for_a_run(clips: Path, tmp_path: Path, run_cli) -> None:
    """A folder holding only a file named last.pt (no run's config.json beside it): a new run refuses it as the
    user's file, and --resume does not advise removing it."""
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "last.pt").write_bytes(b"my own notes")
    new = run_cli("train", clips, "-o", folder, *TRAIN_ARGS)
    assert new.code == 2 and "holds files bavos did not write (last.pt)" in new.err
    resumed = run_cli("train", clips, "-o", folder, "--resume")
    assert resumed.code == 1 and "remove it" not in resumed.err
    assert f"{folder} holds no bavos run (config.json with a run's settings): nothing to resume there" in resumed.err
    assert (folder / "last.pt").read_bytes() == b"my own notes" and sorted(os.listdir(folder)) == ["last.pt"]


def test_fine_tuning_from_a_random_backbone_checkpoint_is_said(
    clips: Path, cache: Path, tmp_path: Path, run_cli
) -> None:
    args = ["--resolution", "128", "160", "--device", "cpu", "--workers", "0", "--batch-size", "1", "--cache", cache]
    assert run_cli("train", clips, "-o", tmp_path / "a", *TRAIN_ARGS, "--steps", "1", "-q").code == 0
    tuned = run_cli(
        "train", clips, "-o", tmp_path / "b", "--init-from", tmp_path / "a" / "last.pt", *args, "--steps", "1"
    )
    assert tuned.code == 0, tuned.err
    assert (
        f"bavos: warning: --init-from {tmp_path / 'a' / 'last.pt'}: that checkpoint was trained on a backbone with "
        "random weights (it records backbone weights 'none'), so this run uses random weights too: the correlator "
        "learns nothing useful"
    ) in tuned.err


def test_two_process_torchrun_on_cpu(clips: Path, cache: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "bavos",
        "train",
        str(clips),
        "-o",
        str(run),
        *TRAIN_ARGS,
        "--steps",
        "3",
        "--batch-size",
        "2",
        "--log-every",
        "1",
        "--cache",
        str(cache),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("last.pt: step 3 of 3") == 1  # only process 0 reports
    assert [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]
    state = torch.load(run / "last.pt", weights_only=True)
    assert state["step"] == 3 and not any(k.startswith("module.") for k in state["model"])
    load_correlator(run / "last.pt", dim=32)


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs CUDA")
def test_one_process_torchrun_on_cuda(clips: Path, cache: Path, tmp_path: Path) -> None:
    """torchrun with one process on CUDA: LOCAL_RANK picks the device, NCCL's group of one trains and saves."""
    run = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "1",
        "-m",
        "bavos",
        "train",
        str(clips),
        "-o",
        str(run),
        *on("cuda", TRAIN_ARGS),
        "--steps",
        "2",
        "--batch-size",
        "2",
        "--cache",
        str(cache),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert torch.load(run / "last.pt", weights_only=True)["step"] == 2


def test_a_step_under_bf16_autocast(clips: Path, cache: Path, device: str) -> None:
    """--precision bf16 (autocast on the CPU as on CUDA): losses stay finite, gradients are float32."""
    cfg = _cfg(cache, precision="bf16", device=device)
    backbone = build_backbone("bavos_test_vit", "none").to(device)
    model = new_correlator(32, MODEL, cfg).train().to(device)
    losses = batch_losses(
        backbone, model, _fixed_batch(clips, cache, cfg).to(device), cfg, torch.Generator().manual_seed(1)
    )
    losses.total.backward()
    assert torch.isfinite(losses.total) and losses.total.dtype == torch.float32
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in model.parameters())


def test_query_points_are_drawn_per_clip(clips: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The release trains one clip per GPU, each drawing its own 8 points: a batch gets one set per clip."""
    seen = []
    real = train_mod.clip_losses

    def spy(attn, feats, points, cfg):
        seen.append(points)
        return real(attn, feats, points, cfg)

    monkeypatch.setattr(train_mod, "clip_losses", spy)
    cfg = _cfg(cache, batch_size=3)
    backbone = build_backbone("bavos_test_vit", "none")
    model = new_correlator(32, MODEL, cfg).train()
    batch_losses(backbone, model, _fixed_batch(clips, cache, cfg), cfg, torch.Generator().manual_seed(5))
    (points,) = seen
    assert points.shape == (3, cfg.points)
    assert len({tuple(p.tolist()) for p in points}) == 3  # three different draws
    assert all(len(set(p.tolist())) == cfg.points for p in points)  # distinct positions within a clip


def test_training_says_its_cost_and_one_line_for_too_many_workers(
    clips: Path, cache: Path, tmp_path: Path, run_cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bavos.config import default_workers

    args = [a for a in TRAIN_ARGS if a not in ("--workers", "0")]
    res = run_cli(
        "train",
        clips,
        "-o",
        tmp_path / "run",
        *args,
        "--steps",
        "1",
        "--batch-size",
        "1",
        "--cache",
        cache,
        "--workers",
        str(default_workers() + 2),
    )
    assert res.code == 0, res.err
    assert "This DataLoader will create" not in res.err  # torch's 6-line advice is not shown
    assert f"bavos: warning: --workers {default_workers() + 2} on a machine with {default_workers()} cores" in res.err
    (line,) = [x for x in res.err.splitlines() if "estimated" in x]
    assert line.startswith("bavos: estimated ") and "a step" in line and "for steps 1..1, peak memory" in line
    assert TrainConfig().workers == default_workers()
    monkeypatch.setattr("bavos.models.costs.available_bytes", lambda device: 1024)
    res = run_cli("train", clips, "-o", tmp_path / "big", *TRAIN_ARGS, "--steps", "1", "--cache", cache)
    assert res.code == 1
    assert res.err.strip().splitlines()[-1].startswith("bavos: error: training needs about ")
    assert "lower --batch-size (clips per step) or --resolution" in res.err
    assert not (tmp_path / "big" / "last.pt").exists()


@pytest.mark.parametrize("mode", ["clip", "process"])
def test_blur_sigma_per_clip_or_once_per_process(
    clips: Path, cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    """--blur-sigma process (the default): one sigma for every clip of every step of a process (the release's,
    method.md §5.4), drawn from (seed, rank); clip: one per clip."""
    from bavos.training import augment as aug

    seen = []
    real = train_mod.augment

    def spy(x, params):
        seen.append(params.sigma.tolist())
        return real(x, params)

    monkeypatch.setattr(train_mod, "augment", spy)
    train(clips, tmp_path / "run", MODEL, _cfg(cache, steps=2, blur_sigma=mode))
    sigmas = {s for step in seen for s in step}
    assert len(seen) == 2 and len(sigmas) == (1 if mode == "process" else 4)
    if mode == "process":

        def of_rank(rank: int) -> float:
            return aug.process_sigma(torch.Generator().manual_seed(train_mod.step_seed(0, -1, rank)))

        assert sigmas.pop() == pytest.approx(of_rank(0))
        assert 0.1 <= of_rank(0) <= 2 and of_rank(1) != of_rank(0)
    same = aug.sample_params(3, torch.Generator().manual_seed(1), sigma=0.7)
    drawn = aug.sample_params(3, torch.Generator().manual_seed(1))
    assert same.sigma.tolist() == [pytest.approx(0.7)] * 3 and torch.equal(same.order, drawn.order)
    with pytest.raises(ConfigError, match="--blur-sigma must be clip or process"):
        _cfg(cache, blur_sigma="frame")


# After a newcomer's trial with other trainers' bug reports


def test_checkpoints_survive_a_stop_between_them_and_a_full_disk(
    clips: Path, cache: Path, tmp_path: Path, run_cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """step-<n>.pt was written before last.pt: a kill between them, or a full disk, left a folder refused for "files
    bavos did not write"; torch's own RuntimeError for the full disk was an internal error."""
    from types import SimpleNamespace

    from bavos.errors import OutputError
    from bavos.models import correlator as correlator_mod
    from bavos.models.correlator import save_checkpoint

    run = tmp_path / "run"
    args = [*TRAIN_ARGS, "--steps", "2", "--checkpoint-every", "1", "--batch-size", "1", "--cache", cache, "-q"]
    assert run_cli("train", clips, "-o", run, *args).code == 0
    last, step = run / "last.pt", run / "step-0000002.pt"
    assert last.read_bytes() == step.read_bytes() and (run / "step-0000001.pt").is_file()
    last.unlink()  # as a stop between the two files left it (or a hand that removed it)
    for resume in ([], ["--resume"]):
        r = run_cli("train", clips, "-o", run, *args, *resume)
        assert r.code == 1 and r.err.strip() == (
            f"bavos: error: {run}: holds numbered checkpoints but no last.pt: copy step-0000002.pt to last.pt to "
            "resume from its step (--resume), or choose another -o"
        )
    shutil.copyfile(step, last)
    assert run_cli("train", clips, "-o", run, *args, "--resume").code == 0  # finished: nothing to do

    def short(payload: object, f: object) -> None:
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 8870400 vs 8870288")

    monkeypatch.setattr(correlator_mod.torch, "save", short)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: SimpleNamespace(free=2**20))  # 1 MB left
    with pytest.raises(OutputError, match=f"^cannot write {tmp_path / 'x.pt'}: no space left on the device"):
        save_checkpoint(tmp_path / "x.pt", Correlator(), {})
    assert not list(tmp_path.glob(".x.pt*"))  # nothing half-written left


def test_a_resume_on_clips_left_out_then_and_usable_now_is_refused(tmp_path: Path, cache: Path, run_cli) -> None:
    """A clip too short for the run, made longer before --resume, was taken in: the run did not repeat."""
    root = tmp_path / "clips"
    root.mkdir()
    write_clip(root / "good.mp4", n=10, height=64, width=96)
    write_clip(root / "short.mp4", n=1, height=64, width=96)
    args = [*TRAIN_ARGS, "--steps", "2", "--batch-size", "1", "--cache", tmp_path / "cache", "-q"]
    assert run_cli("train", root, "-o", tmp_path / "run", *args, "--until", "1").code == 0
    write_clip(root / "short.mp4", n=10, height=64, width=96)
    r = run_cli("train", root, "-o", tmp_path / "run", *args, "--resume")
    assert r.code == 2 and f"{root / 'short.mp4'} was left out by the run and is usable now" in r.err


def test_train_options_said_as_typed_and_quiet_is_errors_only(clips: Path, tmp_path: Path, run_cli) -> None:
    r = run_cli("train", clips, "-o", tmp_path / "a", *TRAIN_ARGS, "--lr", "inf")  # it failed at step 2: nan loss
    assert r.code == 2 and "--lr must be a finite number above 0, got inf" in r.err
    with pytest.raises(ConfigError, match="--resume: --no-augment differs from the run's --augment;"):
        train_config(saved=train_config().__dict__ | {"resolution": [96, 160]}, augment=False)  # "--augment False"
    root = tmp_path / "clips"
    root.mkdir()
    write_clip(root / "good.mp4", n=10, height=64, width=96)
    write_clip(root / "short.mp4", n=1, height=64, width=96)
    quiet = run_cli("train", root, "-o", tmp_path / "q", *TRAIN_ARGS, "--steps", "1", "--batch-size", "1", "-q")
    assert quiet.code == 0 and quiet.err == ""  # the skipped clip is in data.json, not on stderr
    assert json.loads((tmp_path / "q" / "data.json").read_text())["skipped"] == 1


def test_a_resume_on_a_clip_replaced_by_one_of_the_same_size_is_refused(tmp_path: Path, run_cli) -> None:
    """A clip replaced by another of the same byte size and length went unnoticed: the sizes were all compared."""
    root = tmp_path / "clips"
    root.mkdir()
    write_clip(root / "a.mp4", n=10, height=64, width=96)
    args = [*TRAIN_ARGS, "--steps", "2", "--batch-size", "1", "--cache", tmp_path / "cache", "-q"]
    assert run_cli("train", root, "-o", tmp_path / "run", *args, "--until", "1").code == 0
    moved = tmp_path / "moved"
    root.rename(moved)  # a move keeps the clips: the run goes on from there
    assert run_cli("train", moved, "-o", tmp_path / "run", *args, "--resume", "--until", "1").code == 0
    data = bytearray((moved / "a.mp4").read_bytes())
    data[-100] ^= 0xFF  # other bytes, the same size
    (moved / "a.mp4").write_bytes(bytes(data))
    r = run_cli("train", moved, "-o", tmp_path / "run", *args, "--resume")
    assert r.code == 2 and f"{moved / 'a.mp4'} is not the clip the run trained on: its bytes differ" in r.err
