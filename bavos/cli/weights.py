"""`bavos weights`: fetch the default weights into the cache, or report what is cached."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from bavos.cli.app import app
from bavos.cli.help import Command
from bavos.cli.output import echo, error, warn
from bavos.config import DEFAULT_BACKBONE
from bavos.errors import BavosError


@app.command(cls=Command)
def weights(
    check: Annotated[
        bool,
        typer.Option(
            "--check",
            help="Only say what is cached; no network. Exit 1 when the default weights (the paper's "
            "checkpoint) are missing; timm's DINO weights, needed only by --checkpoint none and bavos "
            "train, are a note.",
        ),
    ] = False,
) -> int:
    """Fetch the default weights into the cache and print where they are: the paper's checkpoint (the default
    correlator, with its backbone) and DINO ViT-S/8 from timm's hub (--checkpoint none, bavos train). Run it where
    there is a connection; later runs read the cache without any network call."""
    from bavos.models.hub import cache_dir, hub_weights
    from bavos.models.weights import cached_problem, release_checkpoint, release_path

    def fetched(what: str, fetch: Any, optional: bool = False) -> bool:
        try:
            path = Path(fetch())
        except BavosError as e:
            if optional:
                warn(f"{what}: {e}; needed only by --checkpoint none and bavos train")
                return True
            error(f"{what}: {e}")
            return False
        echo(f"{what}: {path} ({path.stat().st_size / 2**20:.1f} MB)")
        return True

    def release() -> Path:
        if check and not release_path().is_file():
            raise BavosError(f"not in the cache ({release_path()})")
        if check and cached_problem(release_path()) is not None:
            raise BavosError(f"{release_path()}: {cached_problem(release_path())}; bavos weights downloads it again")
        return release_checkpoint()

    echo(f"cache: {cache_dir()} (set BAVOS_CACHE to move it)")
    ok = fetched("paper's checkpoint (--checkpoint release)", release)
    ok &= fetched(
        f"{DEFAULT_BACKBONE} from timm's hub (--backbone-weights hub)",
        lambda: hub_weights(DEFAULT_BACKBONE, download_missing=not check),
        optional=check,
    )
    return 0 if ok else 1
