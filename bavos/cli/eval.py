"""`bavos eval`: scores of predicted masks against ground truth (DAVIS, instance masks)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from bavos.cli.app import app, usage_error
from bavos.cli.help import Command
from bavos.cli.output import echo, print_table, progress_for, warn


def _split(names: str | None) -> list[str] | None:
    """--sequences A,B as a list (None: not given); given, it must name one (an empty one is no "all")."""
    if names is None:
        return None
    listed = [n.strip() for n in names.split(",") if n.strip()]
    if not listed:
        usage_error(f"--sequences {names!r} names no sequence: give A,B, or leave it out for val.txt's", "eval")
    return listed


@app.command(name="eval", cls=Command)
def eval_(
    preds: Annotated[
        Path,
        typer.Argument(
            metavar="PREDS",
            help="Folder with one sub-folder of mask PNGs per sequence (<seq>/*.png, or bavos's <seq>/masks/*.png).",
            show_default=False,
        ),
    ],
    davis: Annotated[
        Path | None,
        typer.Option(
            metavar="DIR",
            show_default="none",
            help="DAVIS-2017 root (Annotations_unsupervised/480p, ImageSets/2017/val.txt).",
        ),
    ] = None,
    protocol: Annotated[
        str | None,
        typer.Option(
            metavar="official|per-frame|release",
            show_default="official",
            help="'official': one Hungarian match per sequence, ids 1..20 (id 0 is background); 'per-frame': a match "
            "in every frame, ids 1..300; 'release': the paper's evaluator, a match in every frame with every "
            "cluster (id 0 too) a proposal, at most 300.",
        ),
    ] = None,
    sequences: Annotated[
        str | None, typer.Option(metavar="A,B,...", show_default="ImageSets/2017/val.txt", help="Sequences to score.")
    ] = None,
    max_proposals: Annotated[
        int | None,
        typer.Option(
            metavar="N",
            show_default="the protocol's",
            help="Most proposals a sequence may hold (more is an error, not cut); another value is reported as "
            "non-standard.",
        ),
    ] = None,
    fg_ari: Annotated[
        bool,
        typer.Option(
            "--fg-ari",
            help="FG-ARI and video mIoU on instance masks instead of DAVIS J/F (ground truth: --gt, or --davis).",
        ),
    ] = False,
    gt: Annotated[
        Path | None,
        typer.Option(
            metavar="DIR",
            show_default="none",
            help="With --fg-ari: folder of ground-truth instance-mask sequence folders.",
        ),
    ] = None,
    json_out: Annotated[
        bool, typer.Option("--json", help="One JSON object on stdout (the table goes to stderr).")
    ] = False,
    csv: Annotated[
        Path | None,
        typer.Option(metavar="FILE", show_default="none", help="Write the per-sequence table to this CSV file."),
    ] = None,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No table and no progress (with --json or --csv).")
    ] = False,
) -> int:
    """Score predictions: DAVIS-2017 unsupervised J and F (the protocol always named), or FG-ARI and mIoU."""
    import json

    if quiet and not json_out and csv is None:
        usage_error("--quiet alone would show nothing: add --json or --csv", "eval")
    _check_ground_truth(fg_ari, protocol, max_proposals, gt, davis)
    names = _split(sequences)
    if csv is not None:  # before the scoring, which can take minutes
        from bavos.evaluation.evaluate import DAVIS_HEADER, INSTANCE_HEADER, check_csv

        check_csv(csv, INSTANCE_HEADER if fg_ari else DAVIS_HEADER)
    with progress_for(quiet) as progress:

        def scored(sequence: str, done: int, total: int) -> None:
            if done == 1:
                progress.start(sequence)
            progress("scoring", done, total)

        report = (
            _instance_report(preds, gt, davis, names, scored)
            if fg_ari
            else _davis_report(preds, davis, protocol or "official", names, max_proposals, scored)
        )
    if csv is not None:
        from bavos.evaluation.evaluate import write_csv

        write_csv(csv, report.header, report.rows)
    if not quiet:
        print_table(report.title, report.shown_header, report.shown, to_stderr=json_out)
    if json_out:
        echo(json.dumps(report.payload))
    return 0


def _check_ground_truth(
    fg_ari: bool, protocol: str | None, max_proposals: int | None, gt: Path | None, davis: Path | None
) -> None:
    """The options of the measures asked for, and none of the others' (they would be ignored)."""
    from bavos.evaluation.evaluate import PROTOCOLS

    if protocol is not None and protocol not in PROTOCOLS:
        usage_error(f"--protocol must be one of {', '.join(PROTOCOLS)}, got {protocol}", "eval")
    if fg_ari:
        for option, value in (("--protocol", protocol), ("--max-proposals", max_proposals)):
            if value is not None:
                usage_error(f"{option} is for J and F; --fg-ari has none", "eval")
        if gt is not None and davis is not None:
            usage_error("--fg-ari takes its ground truth from --gt or --davis, not both", "eval")
        if gt is None and davis is None:
            usage_error("--fg-ari needs the ground truth: --gt (or --davis)", "eval")
    elif gt is not None:
        usage_error("--gt is the ground truth of --fg-ari; J and F take the DAVIS-2017 root with --davis", "eval")
    elif davis is None:
        usage_error("give the DAVIS-2017 root with --davis", "eval")


def _instance_report(preds: Path, gt: Path | None, davis: Path | None, names: list[str] | None, progress: Any) -> Any:
    from bavos.evaluation.evaluate import evaluate_instances, instance_report

    res = evaluate_instances(preds, gt, names, progress=progress, davis=davis)
    for note in res.notes:
        warn(note)
    return instance_report(res)


def _davis_report(
    preds: Path, davis: Path, protocol: str, names: list[str] | None, max_proposals: int | None, progress: Any
) -> Any:
    from bavos.evaluation.evaluate import davis_report, evaluate_davis

    res = evaluate_davis(preds, davis, protocol, names, max_proposals, progress=progress)
    for note in res.notes:
        warn(note)
    return davis_report(res)
