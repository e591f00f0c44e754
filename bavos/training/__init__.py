"""Training the correlator: clips found, decoded once and cached (``clips``), the release's augmentation
(``augment``), the losses (``losses``), the run folder with its checkpoints and logs (``runs``) and the loop, in one
process or under torchrun (``train``).

May import: ``bavos.models``, ``bavos.io``, ``bavos.config``, ``bavos.errors``, ``bavos.version``; not
``bavos.pipeline`` or ``bavos.evaluation``, nor anything above.
"""
