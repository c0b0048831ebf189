"""Real gRPC clients against a running `ml serve --grpc-port`: prints one JSON object of what each decoded.

  grpc_clients.py triton ADDRESS MODEL INPUT N PNG...   tritonclient.grpc: live, ready, model ready,
      server and model metadata, infer with FP32 tensors (raw_input_contents), with the PNG files as a
      BYTES tensor, and the classification extension (class_count=3).
  grpc_clients.py kserve ADDRESS MODEL INPUT N          the KServe Python SDK's gRPC client
      (InferenceGRPCClient): server live and ready, model ready, infer with FP32 tensors.
INPUT: the preprocessed images, raw little-endian float32, N x 28 x 28 x 1. ADDRESS: host:port.
"""
import asyncio
import json
import sys

import numpy as np


def images(path, n):
    return np.fromfile(path, dtype="<f4").reshape([n, 28, 28, 1])


def triton(address, model, x, pngs):
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url=address)
    out = {
        "live": client.is_server_live(),
        "ready": client.is_server_ready(),
        "modelReady": client.is_model_ready(model),
        "serverMetadata": client.get_server_metadata(as_json=True),
        "modelMetadata": client.get_model_metadata(model, as_json=True),
    }
    tensor = grpcclient.InferInput("image", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    result = client.infer(model, [tensor], outputs=[grpcclient.InferRequestedOutput("probabilities")])
    out["fp32"] = result.as_numpy("probabilities").astype("<f4").ravel().tolist()
    files = []
    for path in pngs:
        with open(path, "rb") as f:
            files.append(f.read())
    encoded = np.array(files, dtype=np.object_)
    tensor = grpcclient.InferInput("image", [len(files)], "BYTES")
    tensor.set_data_from_numpy(encoded)
    result = client.infer(model, [tensor])
    out["bytes"] = result.as_numpy("probabilities").astype("<f4").ravel().tolist()
    tensor = grpcclient.InferInput("image", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    result = client.infer(model, [tensor], outputs=[grpcclient.InferRequestedOutput("probabilities", class_count=3)])
    out["classification"] = [[v.decode() if isinstance(v, bytes) else v for v in row] for row in result.as_numpy("probabilities").tolist()]
    client.close()
    return out


async def kserve(address, model, x):
    from kserve import InferenceGRPCClient, InferInput, InferRequest

    client = InferenceGRPCClient(url=address, timeout=60)
    out = {"live": await client.is_server_live(), "ready": await client.is_server_ready(), "modelReady": await client.is_model_ready(model)}
    tensor = InferInput(name="image", shape=list(x.shape), datatype="FP32")
    tensor.set_data_from_numpy(x)
    response = await client.infer(InferRequest(model_name=model, infer_inputs=[tensor]))
    out["probabilities"] = {o.name: o.as_numpy().astype("<f4").ravel().tolist() for o in response.outputs}["probabilities"]
    await client.close()
    return out


def main():
    mode, address, model, path, n = sys.argv[1:6]
    if mode == "triton":
        result = triton(address, model, images(path, int(n)), sys.argv[6:])
    else:
        result = asyncio.run(kserve(address, model, images(path, int(n))))
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
