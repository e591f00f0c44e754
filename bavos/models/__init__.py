"""The networks and where their weights come from: the frozen timm DINO backbone (``backbone``), the temporal
correlator (``correlator``), the cache and timm's hub (``hub``), the paper's checkpoint and which weights a run uses
(``weights``), building both for a device (``loading``), devices, precision and torchrun processes (``devices``), and
what running them costs on this machine (``costs``).

May import: ``bavos.io``, ``bavos.config``, ``bavos.errors``, ``bavos.version``; never the stages above it.
"""
