"""Scores of predicted masks: J and F, Hungarian matching (each protocol named), FG-ARI and mIoU
(``metrics``), and the dataset layouts and reports (``evaluate``: DAVIS-2017, instance masks).

May import: ``bavos.models``, ``bavos.io``, ``bavos.config``, ``bavos.errors``, ``bavos.version``; not
``bavos.pipeline`` or ``bavos.training``, nor anything above.
"""
