"""Real clients against a running `ml serve`: prints one JSON object of what each client decoded.

  serve_clients.py triton URL MODEL INPUT N     tritonclient.http: live, ready, server and model
      metadata, infer with JSON tensors and with the binary tensor extension, the classification
      extension (class_count=3).
  serve_clients.py kserve URL MODEL INPUT N     the KServe Python SDK's REST client: infer, V2 and V1.
  serve_clients.py kserve-health URL MODEL      the same client's V2 server live/ready, model ready.
  serve_clients.py tfserving URL MODEL PNG...   a TF Serving REST :predict request as the TensorFlow
      Serving REST API docs show it: {"instances": [{"b64": "..."}]}.
INPUT: the preprocessed images, raw little-endian float32, N x 28 x 28 x 1. URL: http://host:port.
"""
import asyncio
import base64
import json
import sys

import numpy as np


def images(path, n):
    return np.fromfile(path, dtype="<f4").reshape([n, 28, 28, 1])


def triton(url, model, x):
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(url=url.removeprefix("http://"))
    out = {
        "live": client.is_server_live(),
        "ready": client.is_server_ready(),
        "modelReady": client.is_model_ready(model),
        "serverMetadata": client.get_server_metadata(),
        "modelMetadata": client.get_model_metadata(model),
    }
    for name, binary in (("json", False), ("binary", True)):
        tensor = httpclient.InferInput("image", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x, binary_data=binary)
        result = client.infer(model, [tensor], outputs=[httpclient.InferRequestedOutput("probabilities", binary_data=binary)])
        out[name] = result.as_numpy("probabilities").astype("<f4").ravel().tolist()
    tensor = httpclient.InferInput("image", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=True)
    result = client.infer(model, [tensor], outputs=[httpclient.InferRequestedOutput("probabilities", binary_data=False, class_count=3)])
    out["classification"] = [[v.decode() if isinstance(v, bytes) else v for v in row] for row in result.as_numpy("probabilities").tolist()]
    client.close()
    return out


async def kserve_clients(url, model, x):
    from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

    out = {}
    v2 = InferenceRESTClient(RESTConfig(protocol="v2", timeout=60))
    tensor = InferInput(name="image", shape=list(x.shape), datatype="FP32")
    tensor.set_data_from_numpy(x, binary_data=False)
    response = await v2.infer(url, InferRequest(model_name=model, infer_inputs=[tensor]), model_name=model)
    out["v2"] = {o.name: np.asarray(o.data, dtype="<f4").ravel().tolist() for o in response.outputs}
    await v2.close()
    v1 = InferenceRESTClient(RESTConfig(protocol="v1", timeout=60))
    response = await v1.infer(url, {"instances": x.tolist()}, model_name=model)
    out["v1"] = np.asarray(response["predictions"], dtype="<f4").ravel().tolist()
    await v1.close()
    return out


async def kserve_health(url, model):
    from kserve import InferenceRESTClient, RESTConfig

    v2 = InferenceRESTClient(RESTConfig(protocol="v2", timeout=60))
    out = {"live": await v2.is_server_live(url), "ready": await v2.is_server_ready(url), "modelReady": await v2.is_model_ready(url, model)}
    await v2.close()
    return out


def tfserving(url, model, pngs):
    import requests

    instances = []
    for path in pngs:
        with open(path, "rb") as f:
            instances.append({"b64": base64.b64encode(f.read()).decode("utf-8")})
    response = requests.post(f"{url}/v1/models/{model}:predict", data=json.dumps({"instances": instances}), timeout=60)
    response.raise_for_status()
    return {"predictions": np.asarray(response.json()["predictions"], dtype="<f4").ravel().tolist()}


def main():
    mode, url, model = sys.argv[1:4]
    if mode == "triton":
        result = triton(url, model, images(sys.argv[4], int(sys.argv[5])))
    elif mode == "kserve-health":
        result = asyncio.run(kserve_health(url, model))
    elif mode == "kserve":
        result = asyncio.run(kserve_clients(url, model, images(sys.argv[4], int(sys.argv[5]))))
    else:
        result = tfserving(url, model, sys.argv[4:])
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
