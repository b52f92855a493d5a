"""The app's shared state: cached models and results, and where things live. One module per concept; the layer
mask is never state on a model (it is an argument of every call), so one cached model serves every session.

* torch_setup.py   torch's thread count per script run, the FLOP counter's one-off warm-up
* paths.py         the folders the app reads and writes (DLD_* environment variables override them)
* access.py        who can reach the app and what the operator allows (training switch, data folders)
* checkpoints.py   the checkpoint list and the shared model cache (st.cache_resource, keyed by path and file stamps)
* clips.py         audio clips (uploads, recordings, sample files) and manifests' rows
* clip_names.py    the names people read for sample clips (synthesizer voices, recorded digits)
* results.py       per-mask results: transcripts, latency, GFLOPs, KL views, beam text, budget masks (st.cache_data)
* result_files.py  evaluation, bench and budget-report JSONs on disk, and the evaluation sets' names
* importance.py    the Layer importance page's evaluation sets and cached importance report

Nothing is re-exported here: import each name from its module.
"""
