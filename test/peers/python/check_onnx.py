"""Checks exported models with the ONNX and Triton projects' own Python code.

Reads a JSON job list from argv[1]: [{"onnx": path, "config": config.pbtxt path or null,
"input": raw little-endian float32 file, "n": images}]. For each: onnx.checker.check_model with
full_check=True (shape inference included), the graph's inputs and outputs, the probabilities that
Python onnxruntime computes for the input batch, and config.pbtxt parsed with
google.protobuf.text_format into Triton's ModelConfig message (from tritonclient). Prints one JSON object.
"""
import json
import sys

import numpy as np
import onnx
import onnxruntime as ort
from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2


def dims(value_info):
    shape = value_info.type.tensor_type.shape
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or -1) for d in shape.dim]


def check(job):
    model = onnx.load(job["onnx"])
    onnx.checker.check_model(model, full_check=True)
    inputs = [{"name": i.name, "dims": dims(i), "type": onnx.TensorProto.DataType.Name(i.type.tensor_type.elem_type)} for i in model.graph.input]
    outputs = [{"name": o.name, "dims": dims(o), "type": onnx.TensorProto.DataType.Name(o.type.tensor_type.elem_type)} for o in model.graph.output]
    session = ort.InferenceSession(job["onnx"], providers=["CPUExecutionProvider"])
    shape = [job["n"]] + [int(d) for d in inputs[0]["dims"][1:]]
    x = np.fromfile(job["input"], dtype="<f4").reshape(shape)
    (probabilities,) = session.run([outputs[0]["name"]], {inputs[0]["name"]: x})
    result = {
        "opset": [{"domain": o.domain, "version": o.version} for o in model.opset_import],
        "inputs": inputs,
        "outputs": outputs,
        "probabilities": probabilities.astype("<f4").ravel().tolist(),
    }
    if job.get("config"):
        with open(job["config"]) as f:
            config = text_format.Parse(f.read(), model_config_pb2.ModelConfig())
        result["config"] = json_format.MessageToDict(config, preserving_proto_field_name=True)
    return result


def main():
    with open(sys.argv[1]) as f:
        jobs = json.load(f)
    json.dump({"onnx": onnx.__version__, "onnxruntime": ort.__version__, "results": [check(j) for j in jobs]}, sys.stdout)


if __name__ == "__main__":
    main()
