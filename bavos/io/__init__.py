"""Files in and out, with no model: video decoding and encoding and frame folders (``video``, PyAV and Pillow),
id masks and overlays (``render``), the preview and hierarchy pictures (``pictures``), exports for other tools
(``exports``: COCO RLE, per-object PNGs, mask videos), atomic writes (``files``) and the owners of bavos's hidden
working entries, what dead processes left, and an output folder's lock (``owners``).

May import: ``bavos.config``, ``bavos.errors``; nothing else of bavos.
"""
