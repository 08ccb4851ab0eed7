"""Training on a GPU host that has torch but no MediaPipe, no pydantic and no package registry.

``prepare_bundle`` (here, on the CPU, with the training extra) turns a dataset into a small
bundle of face crops through the job's crop cache; ``train_on_gpu_host`` (there) trains on
that bundle, exports ONNX and checks it the way the workers' liveness stage loads it.
Only ``bundle`` and ``train_on_gpu_host`` must import with the host's packages.
"""
