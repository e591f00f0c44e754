"""bavos.evaluation.evaluate and `bavos eval`: DAVIS layout, both protocols, FG-ARI/mIoU, and one line per bad input."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import reference_metrics as ref
from PIL import Image

from bavos.errors import EvalError
from bavos.evaluation import evaluate, metrics
from bavos.io.render import write_mask


def write_ids(folder: Path, frames: np.ndarray, mode: str = "P") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for t, ids in enumerate(frames):
        if mode == "P":
            write_mask(folder / f"{t:05d}.png", ids)
        else:
            Image.fromarray(ids.astype(np.uint8), mode="L").convert(mode).save(folder / f"{t:05d}.png")


def moving_objects(n: int = 6, shape: tuple[int, int] = (36, 52), objects: int = 2, shift: int = 0) -> np.ndarray:
    """(T, H, W) ids: `objects` squares drifting right; `shift` moves every square further right."""
    out = np.zeros((n, *shape), dtype=np.uint8)
    for t in range(n):
        for o in range(objects):
            top, left = 4 + 14 * o, 3 + 2 * t + 10 * o + shift
            out[t, top : top + 10, left : left + 10] = o + 1
    return out


def make_davis(root: Path, sequences: dict[str, np.ndarray]) -> Path:
    for name, gt in sequences.items():
        write_ids(root / "Annotations_unsupervised" / "480p" / name, gt)
    (root / "ImageSets" / "2017").mkdir(parents=True, exist_ok=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text("".join(f"{n}\n" for n in sequences))
    return root


@pytest.fixture
def davis(tmp_path: Path) -> Path:
    return make_davis(tmp_path / "DAVIS", {"a": moving_objects(), "b": moving_objects(objects=1)})


def test_ground_truth_as_prediction_scores_one(davis: Path, tmp_path: Path) -> None:
    preds = tmp_path / "preds"
    write_ids(preds / "a" / "masks", moving_objects())  # bavos segment's layout
    write_ids(preds / "b", moving_objects(objects=1))  # the DAVIS layout
    for protocol in evaluate.PROTOCOLS:
        res = evaluate.evaluate_davis(preds, davis, protocol)
        out = res.to_json()
        assert list(out) == [*evaluate.MEASURES, "protocol", "sequences", "per_sequence"]
        assert out["protocol"] == protocol and out["sequences"] == ["a", "b"]
        assert out["J&F-Mean"] == out["J-Mean"] == out["F-Mean"] == out["J-Recall"] == 1.0
        assert out["J-Decay"] == 0.0
        assert [o.name for o in res.objects] == ["a_1", "a_2", "b_1"]


def test_shifted_predictions_match_reference_and_hand_iou(davis: Path, tmp_path: Path) -> None:
    preds = tmp_path / "preds"
    shifted = moving_objects(shift=2)
    write_ids(preds / "a", shifted)
    write_ids(preds / "b", moving_objects(objects=1, shift=2))
    res = evaluate.evaluate_davis(preds, davis, sequences=["a"])
    for obj in res.objects:
        assert obj.j[0] == pytest.approx(8 / 12)  # 10x10 squares 2 pixels apart: 10*8 / (10*12)
        assert obj.proposal == obj.object_id
    j, f = ref.sequence_jf(shifted, moving_objects(), 2, 2)
    for g, obj in enumerate(res.objects):
        assert obj.f == pytest.approx(metrics.statistics(f[g, g]))
        assert obj.j == pytest.approx(metrics.statistics(j[g, g]))


def test_fewer_proposals_than_objects_are_padded(davis: Path, tmp_path: Path) -> None:
    preds = tmp_path / "preds"
    write_ids(preds / "a", moving_objects(objects=1))  # object 2 is never predicted
    res = evaluate.evaluate_davis(preds, davis, sequences=["a"])
    by_id = {o.object_id: o for o in res.objects}
    assert by_id[1].j[0] == 1.0 and by_id[2].j == (0.0, 0.0, 0.0) and by_id[2].f[0] == 0.0
    assert res.overall()["J-Mean"] == 0.5


def test_per_frame_protocol_is_more_lenient_when_ids_swap(davis: Path, tmp_path: Path) -> None:
    gt = moving_objects(objects=1)
    swapped = gt.copy()
    swapped[3:][swapped[3:] == 1] = 2  # the object changes id half-way
    preds = tmp_path / "preds"
    write_ids(preds / "b", swapped)
    official = evaluate.evaluate_davis(preds, davis, "official", ["b"]).overall()
    per_frame = evaluate.evaluate_davis(preds, davis, "per-frame", ["b"]).overall()
    assert official["J-Mean"] == pytest.approx(0.5)
    assert per_frame["J-Mean"] == 1.0


def test_release_protocol_counts_id_0_as_a_proposal(davis: Path, tmp_path: Path) -> None:
    """The release's evaluator takes every cluster as a proposal, the largest (bavos's id 0) too."""
    gt = moving_objects(objects=1)
    inverted = np.where(gt == 1, 0, 1).astype(np.uint8)  # the object is id 0, everything else id 1
    write_ids(tmp_path / "preds" / "b", inverted)
    scores = {p: evaluate.evaluate_davis(tmp_path / "preds", davis, p, ["b"]).overall() for p in evaluate.PROTOCOLS}
    assert scores["official"]["J-Mean"] == scores["per-frame"]["J-Mean"] == 0.0  # id 0 is background there
    assert scores["release"]["J-Mean"] == scores["release"]["F-Mean"] == 1.0
    # with the object under id 1, the protocols agree: the extra background proposal matches nothing better
    write_ids(tmp_path / "preds" / "b", gt)
    agree = [evaluate.evaluate_davis(tmp_path / "preds", davis, p, ["b"]).overall() for p in evaluate.PROTOCOLS]
    assert agree[0] == agree[1] == agree[2]


def test_release_and_per_frame_protocols_differ_per_frame_on_hand_made_frames(davis: Path, tmp_path: Path) -> None:
    """Frames 0-2: the object is id 1; frames 3-5: it is id 0, the background id 2. Per-frame matching sees the
    object in half the frames, the release's in all of them; the official protocol in half as well."""
    gt = moving_objects(objects=1)
    pred = np.where(gt == 1, 1, 0).astype(np.uint8)
    pred[3:] = np.where(gt[3:] == 1, 0, 2)
    write_ids(tmp_path / "preds" / "b", pred)
    j = {
        p: evaluate.evaluate_davis(tmp_path / "preds", davis, p, ["b"]).overall()["J-Mean"] for p in evaluate.PROTOCOLS
    }
    assert j == {"official": pytest.approx(0.5), "per-frame": pytest.approx(0.5), "release": 1.0}


def test_300_proposals_with_16_bit_masks(davis: Path, tmp_path: Path) -> None:
    gt = moving_objects(objects=1)
    many = np.zeros(gt.shape, dtype=np.uint16)
    flat = many.reshape(len(gt), -1)
    flat[:] = np.arange(flat.shape[1]) % 300  # ids 0..299 in every frame, id 1 only on the object
    many[many == 1] = 0
    many[gt == 1] = 1
    write_ids(tmp_path / "preds" / "b", many)
    with Image.open(tmp_path / "preds" / "b" / "00000.png") as im:
        assert im.mode == "I;16"
    for protocol in ("per-frame", "release"):  # 299 proposals, and 300 with id 0
        assert evaluate.evaluate_davis(tmp_path / "preds", davis, protocol, ["b"]).overall()["J-Mean"] == 1.0
    many[0, 0, 0] = 300  # ids 0..300: the release's evaluator would have 301 proposals
    write_ids(tmp_path / "preds" / "b", many)
    assert evaluate.evaluate_davis(tmp_path / "preds", davis, "per-frame", ["b"]).overall()["J-Mean"] == 1.0
    with pytest.raises(EvalError, match=r"301 clusters \(ids 0..300\), more than the 300 proposals"):
        evaluate.evaluate_davis(tmp_path / "preds", davis, "release", ["b"])
    res = evaluate.evaluate_davis(tmp_path / "preds", davis, "release", ["b"], max_proposals=301)
    assert res.protocol == "release (up to 301 proposals)" and res.overall()["J-Mean"] == 1.0


def test_proposal_limit_and_non_standard_name(davis: Path, tmp_path: Path) -> None:
    preds = tmp_path / "preds"
    many = moving_objects(objects=1)
    many[:, 30:, 40:] = 21  # id 21: one more than the official limit
    write_ids(preds / "b" / "masks", many)  # a result of bavos segment, which bavos recut can cut
    (preds / "b" / "summary.json").write_text("{}")
    with pytest.raises(EvalError) as said:
        evaluate.evaluate_davis(preds, davis, "official", ["b"])
    assert "the predictions hold id 21, more than the 20 proposals the official protocol allows: cut them to " in str(
        said.value
    ) and f"(bavos recut {preds / 'b'} --max-objects 21: the background is one)" in str(said.value)
    write_ids(preds / "b" / "masks", np.minimum(many, 20))  # ids 0..20, as --max-objects 21 gives: within the protocol
    evaluate.evaluate_davis(preds, davis, "official", ["b"])
    write_ids(preds / "b" / "masks", many)
    with pytest.raises(EvalError, match=r"more than the 5 proposals of --max-proposals 5: .*--max-objects 6"):
        evaluate.evaluate_davis(preds, davis, "official", ["b"], max_proposals=5)
    with pytest.raises(EvalError, match=r"hold 22 clusters \(ids 0..21\), more than the 21 proposals of "):
        evaluate.evaluate_davis(preds, davis, "release", ["b"], max_proposals=21)
    res = evaluate.evaluate_davis(preds, davis, "official", ["b"], max_proposals=21)
    assert res.protocol == "official (non-standard: up to 21 proposals)"
    assert evaluate.evaluate_davis(preds, davis, "per-frame", ["b"]).protocol == "per-frame"


def test_objects_come_from_the_first_frame(tmp_path: Path) -> None:
    gt = moving_objects(objects=2)
    gt[0][gt[0] == 2] = 0  # object 2 only appears from frame 1 on
    root = make_davis(tmp_path / "DAVIS", {"late": gt})
    write_ids(tmp_path / "preds" / "late", gt)
    res = evaluate.evaluate_davis(tmp_path / "preds", root)
    assert [o.object_id for o in res.objects] == [1]
    assert "after the first frame" in res.notes[0]


@pytest.mark.parametrize(
    "problem, message",
    [
        ("missing", "no predictions for sequence 'b'"),
        ("missing", "does not exist; predictions are there for 1 sequence: score it alone with --sequences a"),
        ("size", "prediction is 50x36, the ground truth is 52x36"),
        ("rgb", "must be PNGs of ids: indexed (palette), 8-bit or 16-bit grey; this one is mode RGB"),
        ("count", "5 prediction frames, the ground truth has 6 (first missing: 00005.png)"),
        ("extra", "7 prediction frames, the ground truth has 6"),
        ("sequence", "sequence 'zz' has no annotations"),
    ],
)
def test_bad_predictions_are_one_clear_error(davis: Path, tmp_path: Path, problem: str, message: str) -> None:
    preds = tmp_path / "preds"
    write_ids(preds / "a", moving_objects())
    gt_b = moving_objects(objects=1)
    if problem == "size":
        write_ids(preds / "b", gt_b[:, :, :50])
    elif problem == "rgb":
        write_ids(preds / "b", gt_b, mode="RGB")
    elif problem == "count":
        write_ids(preds / "b", gt_b[:5])
    elif problem == "extra":
        write_ids(preds / "b", np.concatenate([gt_b, gt_b[:1]]))
    elif problem == "sequence":
        write_ids(preds / "b", gt_b)
    scored = []
    with pytest.raises(EvalError) as err:
        evaluate.evaluate_davis(
            preds, davis, sequences=["a", "zz"] if problem == "sequence" else None, progress=lambda *a: scored.append(a)
        )
    assert message in str(err.value)
    assert "\n" not in str(err.value)
    assert not scored or problem not in ("missing", "sequence")  # said before the first sequence is scored


def test_missing_davis_parts(tmp_path: Path) -> None:
    with pytest.raises(EvalError, match="does not exist"):
        evaluate.evaluate_davis(tmp_path, tmp_path / "nope")
    (tmp_path / "D" / "Annotations_unsupervised" / "480p" / "x").mkdir(parents=True)
    with pytest.raises(EvalError, match="give the sequences with --sequences"):
        evaluate.evaluate_davis(tmp_path, tmp_path / "D")
    with pytest.raises(EvalError, match="Annotations_unsupervised"):
        evaluate.evaluate_davis(tmp_path, tmp_path)


def test_the_csv_has_no_negative_zero() -> None:
    """FG-ARI of chance agreement can be a tiny negative number: 0 in the CSV, as in the table."""
    res = evaluate.InstanceResult(fg_ari={"s": -4e-9}, miou={"s": 0.5})
    assert evaluate.instance_report(res).rows == [["s", "0.000000", "0.500000"]]


def test_instances_fg_ari_and_miou(tmp_path: Path) -> None:
    gt = moving_objects(objects=2)
    write_ids(tmp_path / "gt" / "s", gt)
    pred = gt.copy()
    pred[gt == 0] = 7  # a different background id does not matter for FG-ARI
    pred[gt == 1], pred[gt == 2] = 3, 9  # renamed objects
    write_ids(tmp_path / "preds" / "s", pred)
    res = evaluate.evaluate_instances(tmp_path / "preds", tmp_path / "gt")
    assert res.fg_ari == {"s": 1.0}
    assert res.miou["s"] == pytest.approx(1.0)
    wide = np.where(gt == 1, 1000, np.where(gt == 2, 40000, 300)).astype(np.uint16)  # 16-bit ids, same partition
    write_ids(tmp_path / "preds" / "s", wide)
    res = evaluate.evaluate_instances(tmp_path / "preds", tmp_path / "gt")
    assert res.fg_ari == {"s": 1.0} and res.miou["s"] == pytest.approx(1.0)
    merged = np.where(gt > 0, 3, 0).astype(np.uint8)  # both objects under one id
    write_ids(tmp_path / "preds" / "s", merged)
    res = evaluate.evaluate_instances(tmp_path / "preds", tmp_path / "gt")
    assert res.fg_ari["s"] == 0.0
    assert res.miou["s"] == pytest.approx(0.25)  # one object matched at IoU 1/2, the other unmatched


def test_cli_json_csv_and_table(davis: Path, tmp_path: Path, run_cli) -> None:
    preds = tmp_path / "preds"
    write_ids(preds / "a", moving_objects(shift=1))
    write_ids(preds / "b", moving_objects(objects=1))
    out_csv = tmp_path / "scores.csv"
    res = run_cli("eval", str(preds), "--davis", str(davis), "--json", "--csv", str(out_csv))
    assert res.code == 0, res.err
    lines = res.out.strip().splitlines()
    assert len(lines) == 1
    payload = json.loads(lines[-1])
    assert set(payload) == {*evaluate.MEASURES, "protocol", "sequences", "per_sequence"}
    assert payload["protocol"] == "official"
    assert all(0 <= payload[m] <= 1 for m in ("J-Mean", "F-Mean", "J&F-Mean"))
    assert "protocol: official" in res.err  # the table goes to stderr when stdout carries JSON
    rows = list(csv.DictReader(out_csv.open()))
    assert [r["Sequence"] for r in rows] == ["a", "b"] and rows[0]["Protocol"] == "official"
    assert float(rows[1]["J-Mean"]) == 1.0
    table = run_cli("eval", str(preds), "--davis", str(davis), "--protocol", "per-frame")
    assert table.code == 0 and "protocol: per-frame" in table.out and "overall" in table.out


def test_cli_errors_are_one_line(davis: Path, tmp_path: Path, run_cli) -> None:
    res = run_cli("eval", str(tmp_path / "none"), "--davis", str(davis))  # a folder given that is not there: usage
    assert res.code == 2 and res.err.count("\n") == 1 and res.err.startswith("bavos: error: ")
    res = run_cli("eval", str(tmp_path))
    assert res.code == 2 and "--davis" in res.err
    res = run_cli("eval", str(tmp_path), "--davis", str(davis), "--protocol", "lenient")
    assert res.code == 2 and "--protocol must be one of official, per-frame, release, got lenient" in res.err
    res = run_cli("eval", str(tmp_path), "--davis", str(davis), "-q")
    assert res.code == 2 and "--quiet alone would show nothing" in res.err
    write_ids(tmp_path / "g" / "s", moving_objects())
    write_ids(tmp_path / "p" / "s", moving_objects())
    res = run_cli("eval", str(tmp_path / "p"), "--fg-ari", "--gt", str(tmp_path / "g"), "--json")
    assert res.code == 0 and json.loads(res.out) == {
        "FG-ARI": 1.0,
        "mIoU": 1.0,
        "sequences": ["s"],
        "per_sequence": {"s": {"FG-ARI": 1.0, "mIoU": 1.0}},
    }
    res = run_cli("eval", str(tmp_path / "p"), "--gt", str(tmp_path / "g"))  # it said to give --davis only
    assert res.code == 2 and "--gt is the ground truth of --fg-ari; J and F take the DAVIS-2017 root" in res.err
    a_file = tmp_path / "p" / "s" / "00000.png"
    res = run_cli("eval", str(a_file), "--davis", str(davis))  # it said the file does not exist
    assert res.code == 2 and f"prediction folder {a_file} is a file, not a folder" in res.err
    res = run_cli("eval", str(a_file), "--fg-ari", "--gt", str(tmp_path / "g"))
    assert res.code == 2 and f"prediction folder {a_file} is a file, not a folder" in res.err
    nowhere = tmp_path / "no" / "x.csv"  # a CSV that cannot be written is said before the scoring, not after it
    res = run_cli("eval", str(tmp_path / "p"), "--fg-ari", "--gt", str(tmp_path / "g"), "--csv", nowhere)
    assert res.code == 2 and f"folder {tmp_path / 'no'} does not exist" in res.err and "scoring" not in res.err
    res = run_cli("eval", str(tmp_path / "p"), "--davis", str(tmp_path / "nope"))  # each was exit code 1
    assert res.code == 2 and f"DAVIS root {tmp_path / 'nope'} does not exist" in res.err
    res = run_cli("eval", str(tmp_path / "p"), "--davis", str(davis), "--sequences", "a,zz")
    assert res.code == 2 and "sequence 'zz' has no annotations in " in res.err
    res = run_cli("eval", str(tmp_path / "p"), "--fg-ari", "--gt", str(tmp_path / "g"), "--sequences", "zz")
    assert res.code == 2 and f"sequence 'zz' has no ground truth in {tmp_path / 'g'}" in res.err
    for empty in ("", " , "):  # a trial: "" scored every sequence of val.txt, silently
        res = run_cli("eval", str(tmp_path / "p"), "--davis", str(davis), "--sequences", empty)
        assert res.code == 2 and res.err.strip() == (
            f"bavos: error: --sequences {empty!r} names no sequence: give A,B, or leave it out for val.txt's "
            "(see 'bavos eval --help')"
        )


def test_one_result_given_for_the_folder_of_results_is_named(davis: Path, tmp_path: Path, run_cli) -> None:
    """`bavos eval out/a` (one result of bavos segment, with its masks/) hinted at scoring a sequence named masks."""
    write_ids(tmp_path / "out" / "a" / "masks", moving_objects())
    res = run_cli("eval", str(tmp_path / "out" / "a"), "--davis", str(davis), "--sequences", "a")
    assert res.code == 2 and res.err.strip() == (
        f"bavos: error: {tmp_path / 'out' / 'a'} is one result (it holds masks/), not a folder of results: give the "
        f"folder above it, {tmp_path / 'out'}, with --sequences a"
    )
    followed = run_cli("eval", str(tmp_path / "out"), "--davis", str(davis), "--sequences", "a", "--json")
    assert followed.code == 0 and json.loads(followed.out)["J-Mean"] == 1.0


def test_masks_named_in_capitals_are_the_same_frames(davis: Path, tmp_path: Path) -> None:
    """00000.PNG beside ground truth named 00000.png: it said "6 prediction frames, the ground truth has 6 (first
    missing: 00000.png)"."""
    write_ids(tmp_path / "preds" / "a", moving_objects())
    for png in (tmp_path / "preds" / "a").glob("*.png"):
        png.rename(png.with_suffix(".PNG"))
    res = evaluate.evaluate_davis(tmp_path / "preds", davis, sequences=["a"])
    assert res.objects and all(o.j[0] == 1.0 for o in res.objects)


def test_fg_ari_says_when_a_sequence_never_shows_two_objects(tmp_path: Path, run_cli) -> None:
    """With one object, FG-ARI only says whether it was split (1.0 kept whole, 0.0 split): said, not hidden."""
    one, two = moving_objects(objects=1), moving_objects(objects=2)
    for name, gt in (("one", one), ("two", two)):
        write_ids(tmp_path / "g" / name, gt)
    split = one.copy()
    split[:, :, 8:][one[:, :, 8:] == 1] = 5  # the one object cut at x 8 in the frames where it spans it
    write_ids(tmp_path / "p" / "one", split)
    write_ids(tmp_path / "p" / "two", two)
    res = evaluate.evaluate_instances(tmp_path / "p", tmp_path / "g")
    assert res.one_object == ["one"] and res.fg_ari["two"] == 1.0 and res.fg_ari["one"] < 1.0
    r = run_cli("eval", tmp_path / "p", "--fg-ari", "--gt", tmp_path / "g", "--json")
    assert r.code == 0
    assert (
        "bavos: warning: FG-ARI needs two or more objects in a frame: 1 sequence (one) never shows two, so "
        "its FG-ARI is only the share of frames in which the one object was kept whole (a frame scores 1.000 if "
        "it was, 0.000 if it was split); mIoU still scores it"
    ) in r.err
    kept_whole = [not ((split[t] == 1).any() and (split[t] == 5).any()) for t in range(len(one))]
    assert res.fg_ari["one"] == pytest.approx(np.mean(kept_whole))  # what the warning says it is


# Inputs after other evaluators' bug reports (davis2017-evaluation and others), each once a fault in bavos eval


def test_a_sequence_named_twice_is_scored_once(davis: Path, tmp_path: Path) -> None:
    """--sequences a,a,b scored a twice (its objects counted twice in the means); so did a val.txt line twice."""
    preds = tmp_path / "preds"
    write_ids(preds / "a", moving_objects(shift=1))
    write_ids(preds / "b", moving_objects(objects=1))
    once = evaluate.evaluate_davis(preds, davis, sequences=["a", "b"])
    twice = evaluate.evaluate_davis(preds, davis, sequences=["a", "a", "b"])
    assert twice.sequences == ["a", "b"] and twice.overall() == once.overall() and len(twice.objects) == 3
    (davis / "ImageSets" / "2017" / "val.txt").write_text("a\nb\na\n")
    listed = evaluate.evaluate_davis(preds, davis)
    assert listed.sequences == ["a", "b"] and listed.overall() == once.overall()
    assert any("lists a twice" in n for n in listed.notes)


def test_sequence_lists_that_are_empty_or_not_text(davis: Path, tmp_path: Path) -> None:
    preds = tmp_path / "preds"
    write_ids(preds / "a", moving_objects())
    write_ids(preds / "b", moving_objects(objects=1))
    val = davis / "ImageSets" / "2017" / "val.txt"
    val.write_text("\n \n")  # it scored nothing and said J&F NaN, exit code 0
    with pytest.raises(EvalError, match=f"^{val} lists no sequence"):
        evaluate.evaluate_davis(preds, davis)
    val.write_bytes(b"a\nb\n# caf\xe9\n")  # it was an internal UnicodeDecodeError, naming no file
    with pytest.raises(EvalError, match=f"^{val} is not UTF-8 text"):
        evaluate.evaluate_davis(preds, davis)
    val.write_bytes(b"\xef\xbb\xbfa\r\nb\r\n")  # as Notepad saves it: it asked for a sequence '\ufeffa'
    assert evaluate.evaluate_davis(preds, davis).sequences == ["a", "b"]


def test_json_has_per_sequence_scores_and_no_nan(davis: Path, tmp_path: Path, run_cli) -> None:
    """`--json` printed NaN (not JSON) for a sequence with nothing to score, and only the overall means."""
    empty_first = moving_objects()
    empty_first[0] = 0  # no object in the first annotated frame: nothing to score there
    make_davis(davis, {"a": moving_objects(), "b": empty_first})
    preds = tmp_path / "preds"
    write_ids(preds / "a", moving_objects(shift=1))
    write_ids(preds / "b", moving_objects())
    r = run_cli("eval", preds, "--davis", davis, "--json", "-q")
    assert r.code == 0, r.err
    payload = json.loads(r.out, parse_constant=lambda c: pytest.fail(f"{c} is not JSON"))
    assert payload["per_sequence"]["b"] == {"objects": 0, **dict.fromkeys(evaluate.MEASURES)}
    a = payload["per_sequence"]["a"]
    assert a["objects"] == 2 and a["J&F-Mean"] == payload["J&F-Mean"] < 1
    nothing = run_cli("eval", preds, "--davis", davis, "--sequences", "b", "--json")  # every measure was NaN, exit 0
    assert nothing.code == 1 and "nothing to score: no sequence has an object in its first annotated frame" in (
        nothing.err
    )


@pytest.mark.filterwarnings("error::RuntimeWarning")
def test_fg_ari_without_foreground_is_null_not_nan(tmp_path: Path, run_cli) -> None:
    write_ids(tmp_path / "g" / "s", moving_objects())
    write_ids(tmp_path / "g" / "bare", np.zeros((3, 36, 52), np.uint8))
    for name in ("s", "bare"):
        write_ids(tmp_path / "p" / name, moving_objects()[:3] if name == "bare" else moving_objects())
    res = evaluate.evaluate_instances(tmp_path / "p", tmp_path / "g")  # numpy's "Mean of empty slice" came out
    assert any("bare: no foreground in the ground truth" in n for n in res.notes)
    r = run_cli("eval", tmp_path / "p", "--fg-ari", "--gt", tmp_path / "g", "--json", "-q")
    payload = json.loads(r.out, parse_constant=lambda c: pytest.fail(f"{c} is not JSON"))
    assert r.code == 0 and payload["per_sequence"] == {
        "bare": {"FG-ARI": None, "mIoU": None},
        "s": {"FG-ARI": 1.0, "mIoU": 1.0},
    }
    assert payload["FG-ARI"] == payload["mIoU"] == 1.0 and "RuntimeWarning" not in r.err
    with pytest.raises(EvalError, match="nothing to score: no sequence has ground-truth foreground"):
        evaluate.evaluate_instances(tmp_path / "p", tmp_path / "g", ["bare"])


def test_fg_ari_with_16_bit_ground_truth_ids_past_255(tmp_path: Path) -> None:
    """Ids 1 and 256: the count table had 256 columns, so object 256 was counted as object 0 (mIoU 0.375, not
    0.5); ids 1 and 300 raised an internal ValueError."""
    gt = np.zeros((3, 60, 80), np.uint16)
    gt[:, 5:25, 5:25], gt[:, 30:50, 40:70] = 1, 256
    pred = np.where(gt == 1, 1, 0).astype(np.uint8)  # object 1 exactly, object 256 missed
    pred[:, 0, 0] = 3
    write_ids(tmp_path / "p" / "s", pred)
    for top in (256, 300):
        (tmp_path / "g" / "s").mkdir(parents=True, exist_ok=True)
        for t, ids in enumerate(np.where(gt == 256, top, gt).astype(np.uint16)):
            Image.fromarray(ids).save(tmp_path / "g" / "s" / f"{t:05d}.png")  # 16-bit grey
        assert evaluate.evaluate_instances(tmp_path / "p", tmp_path / "g").miou["s"] == pytest.approx(0.5)


def test_jpeg_data_named_png_is_refused(davis: Path, tmp_path: Path) -> None:
    """A lossy mask under a .png name was scored (J&F 0.979 for the ground truth itself)."""
    preds = tmp_path / "preds"
    write_ids(preds / "a", moving_objects())
    write_ids(preds / "b", moving_objects(objects=1))
    lossy = preds / "b" / "00003.png"
    Image.fromarray(moving_objects(objects=1)[3] * 40, mode="L").save(lossy, format="JPEG", quality=90)
    with pytest.raises(EvalError, match=f"^{lossy}: a JPEG file named .png: masks must be PNGs"):
        evaluate.evaluate_davis(preds, davis)


def test_hints_name_folders_that_can_be_scored(davis: Path, tmp_path: Path, run_cli) -> None:
    """The hint named folders without annotations (--sequences run1, which then failed) and missed a folder named
    in other capitals."""
    nested = tmp_path / "n"
    write_ids(nested / "run1" / "a", moving_objects())
    write_ids(nested / "run1" / "b", moving_objects(objects=1))
    r = run_cli("eval", nested, "--davis", davis)
    assert r.code == 2 and r.err.strip().endswith(f"{nested / 'run1'} holds the sequences' folders: give it instead")
    other = tmp_path / "o"
    write_ids(other / "A", moving_objects())
    write_ids(other / "b", moving_objects(objects=1))
    r = run_cli("eval", other, "--davis", davis)
    assert r.code == 1 and "a folder A is there: sequence names are case-sensitive" in r.err
    assert "score it alone with --sequences b" in r.err and "--sequences A" not in r.err
    r = run_cli("eval", other / "b", "--davis", davis)  # one sequence's folder of masks: exit 1, no hint
    assert r.code == 2 and f"{other / 'b'} holds mask PNGs: it is one sequence; give the folder above it, {other}" in (
        r.err
    )


def test_fg_ari_with_a_davis_root_scores_its_val_sequences(davis: Path, tmp_path: Path) -> None:
    """--fg-ari --davis took every folder of the annotations, train sequences too, not ImageSets/2017/val.txt."""
    write_ids(davis / "Annotations_unsupervised" / "480p" / "train_only", moving_objects())
    preds = tmp_path / "preds"
    write_ids(preds / "a", moving_objects())
    write_ids(preds / "b", moving_objects(objects=1))
    res = evaluate.evaluate_instances(preds, davis=davis)
    assert list(res.fg_ari) == ["a", "b"]


def test_options_that_would_do_nothing_are_refused(davis: Path, tmp_path: Path, run_cli) -> None:
    write_ids(tmp_path / "g" / "s", moving_objects())
    write_ids(tmp_path / "p" / "s", moving_objects())
    fg = ["eval", tmp_path / "p", "--fg-ari", "--gt", tmp_path / "g"]
    for extra, said in (
        (["--protocol", "release"], "--protocol is for J and F; --fg-ari has none"),
        (["--max-proposals", "3"], "--max-proposals is for J and F; --fg-ari has none"),
        (["--davis", davis], "--fg-ari takes its ground truth from --gt or --davis, not both"),
    ):
        r = run_cli(*fg, *extra)
        assert r.code == 2 and said in r.err, r.err
    a_file = tmp_path / "p" / "s" / "00000.png"
    r = run_cli("eval", tmp_path / "p", "--davis", a_file)
    assert r.code == 2 and f"DAVIS root {a_file} is a file, not a folder" in r.err


def test_csv_onto_a_file_of_yours_is_refused_before_the_scoring(davis: Path, tmp_path: Path, run_cli) -> None:
    preds = tmp_path / "preds"
    write_ids(preds / "a", moving_objects())
    write_ids(preds / "b", moving_objects(objects=1))
    mine = tmp_path / "mine.csv"
    mine.write_text("hello\n")
    r = run_cli("eval", preds, "--davis", davis, "--csv", mine, "--json")
    assert r.code == 2 and "a file that is not a bavos table is there" in r.err and "scoring" not in r.err
    assert mine.read_text() == "hello\n"


def test_smaller_eval_messages(davis: Path, tmp_path: Path) -> None:
    preds = tmp_path / "preds"
    write_ids(preds / "a", moving_objects())
    gt_b = moving_objects(objects=1)
    write_ids(preds / "b", np.concatenate([gt_b, gt_b[:1]]))
    with pytest.raises(EvalError, match=r"7 prediction frames, the ground truth has 6 \(not in it: 00006.png\)"):
        evaluate.evaluate_davis(preds, davis)
    (preds / "b" / "00006.png").unlink()
    write_ids(preds / "b", np.where(gt_b > 0, 255, 0))  # a 0/255 mask, not bavos's: bavos recut cannot cut it
    with pytest.raises(EvalError, match="relabel them with ids 1..20") as err:
        evaluate.evaluate_davis(preds, davis)
    assert "recut" not in str(err.value)
    assert evaluate.protocol_name("official", 1) == "official (non-standard: up to 1 proposal)"


def test_ground_truth_given_a_level_too_high_is_named(davis: Path, tmp_path: Path, run_cli) -> None:
    """--gt .../Annotations_unsupervised (480p below it) blamed the predictions for a sequence '480p'; a folder
    holding the DAVIS root was "Annotations_unsupervised/480p does not exist" with no more; FG-ARI's --csv onto
    bavos's J and F table said it was no bavos table."""
    preds = tmp_path / "preds"
    write_ids(preds / "a", moving_objects())
    write_ids(preds / "b", moving_objects(objects=1))
    high = davis / "Annotations_unsupervised"
    r = run_cli("eval", preds, "--fg-ari", "--gt", high)
    assert r.code == 2 and f"{high}: its folders hold no masks; {high / '480p'} holds the sequences' folders" in r.err
    r = run_cli("eval", preds, "--davis", davis.parent)
    assert r.code == 2 and f"Annotations_unsupervised/480p); {davis} is one: give it" in r.err
    table = tmp_path / "t.csv"
    assert run_cli("eval", preds, "--davis", davis, "--csv", table, "-q").code == 0
    r = run_cli("eval", preds, "--fg-ari", "--davis", davis, "--csv", table, "-q")
    assert r.code == 2 and f"--csv {table}: holds bavos's table of the other measures (its columns: Sequence, " in r.err
