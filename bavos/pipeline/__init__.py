"""The passes of one segmentation, in order: key frames and the attention window by window (``attention``),
the clustering and its hierarchy (``cluster``, its products: ``products``), a GPU's Triton kernels for both
(``kernels``, run by ``fused``), what they move and read back (``traffic``), the passes over the video
(``segment``), labels on disk (``store``), masks at the frame's size (``masks``), writing a result (``outputs``),
another cut without the model (``recut``), and many inputs in one call (``batch``: output names, finished results,
what to skip).

May import: ``bavos.models``, ``bavos.io``, ``bavos.config``, ``bavos.errors``, ``bavos.version``; not
``bavos.training`` or ``bavos.evaluation``, nor anything above.
"""
