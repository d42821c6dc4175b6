"""The Ray engine of ``hamacho inference --engine ray``: the same scoring, spread over a Ray cluster.

How a run goes (docs/inference.md, "On a cluster"):

1. :func:`hamacho.inference.prepare_inference` opens the model and finds the images, as the local engine does.
2. :mod:`.checkpoint` decides what is left to score: everything, or with ``--resume`` the model batches an
   earlier run did not save.
3. :mod:`.connection` starts a local Ray or joins a cluster (``--ray-address``), and checks that the nodes
   that will run actors can read the model and the images.
4. :mod:`.pipeline` turns the image paths into Ray Data blocks of whole model batches, and maps them
   through a fixed pool of :class:`~.scorer.BlockScorer` actors, each of which opens the model once
   (``model.pt`` or an export folder) and decodes and scores its blocks with the Predictor.
5. :mod:`.run` takes the results in input order as they stream back (Ray Data's back-pressure holds the
   actors when the driver falls behind), feeds the same collector, picture writer and checkpoint as the
   local engine would, and at the end writes results.csv (the local engine's rows, in its order),
   results.parquet and, as today, metrics.json and the report.

Through Ray Client (``ray://``), :mod:`.client` runs all of this as one task on the head node, since Ray Data's
executor cannot run in a client.

Nothing here imports Ray at module level except the modules that run only with ``--engine ray``;
:mod:`.options` is what the CLI reads, and it imports nothing heavy.
"""
