"""`bavos view`: a result in the browser, its cut moved live. ``results`` opens a result for viewing (frames and ids
on demand, cuts, saving a cut as recut writes it); ``server`` serves the page and its data to one browser on this
machine (Starlette, the optional extra ``view``); ``static/`` holds the page. May import the pipeline, io,
config and errors; the command line imports it."""
