"""A Triton Python-backend model that does no work: zeros for every output its config declares.

The bench's floor (floor.py) serves the real graph, with the real configs (batching, instances,
queue policies), and this file as every step's model.py. What that graph costs per request is
what the framework costs whatever the models do: gRPC, the ensemble's scheduling, and each
request's hand-off to and from five Python stubs. Like any real step it reads every input it
was given (the bytes cross into the stub either way) and answers every request.

This file is copied into a variant repository and imported by the stub by path, so it imports
nothing from the project.
"""

from __future__ import annotations

import json

import numpy as np


class TritonPythonModel:
    """Zeros of the configured shapes, one response per request."""

    def initialize(self, args: dict) -> None:
        import triton_python_backend_utils as pb

        self.pb = pb
        config = json.loads(args["model_config"])
        self.inputs = [i["name"] for i in config["input"]]
        self.outputs = [
            (o["name"], pb.triton_string_to_numpy(o["data_type"]), [int(d) for d in o["dims"]])
            for o in config["output"]
        ]

    def execute(self, requests: list) -> list:
        responses = []
        for request in requests:
            rows = 1
            for name in self.inputs:
                tensor = self.pb.get_input_tensor_by_name(request, name)
                if tensor is not None:
                    rows = tensor.as_numpy().shape[0]
            tensors = [
                self.pb.Tensor(name, np.zeros([rows, *dims], dtype))
                for name, dtype, dims in self.outputs
            ]
            responses.append(self.pb.InferenceResponse(output_tensors=tensors))
        return responses
