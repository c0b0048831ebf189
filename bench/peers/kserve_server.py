"""The Python peer of bench:serve: the KServe Python ModelServer (kserve.Model + kserve.ModelServer,
Open Inference Protocol V2 over REST, FastAPI on uvicorn) serving an exported model.onnx with Python
onnxruntime, as a KServe custom predictor does.

It listens on a loopback socket it binds itself on an ephemeral port (kserve's REST server binds
0.0.0.0 on a fixed port otherwise), prints {"port": N} on stdout once the socket is bound, and serves
until SIGTERM. One uvicorn worker process, no gRPC port, no per-request log lines: the same process
count as the ml server it is compared with, and no logging that ml's server does not do either.
"""
import argparse
import importlib.metadata
import json
import logging
import os
import socket
import sys

os.environ.setdefault("OMP_NUM_THREADS", "1")
import kserve  # noqa: E402
import kserve.model_server  # noqa: E402
import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse  # noqa: E402
from kserve.protocol.rest.server import RESTServer  # noqa: E402
from kserve.utils.utils import generate_uuid  # noqa: E402


class OnnxClassifier(kserve.Model):
    """model.onnx in one onnxruntime session: each request is one run of its images."""

    def __init__(self, name, path, threads):
        super().__init__(name)
        self.path = path
        self.threads = threads
        self.load()

    def load(self):
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # As ml's sessions: idle intra-op threads sleep rather than spin.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(self.path, options, providers=["CPUExecutionProvider"])
        names = [i.name for i in self.session.get_inputs()]
        self.input = "image" if "image" in names else names[0]
        outputs = [o.name for o in self.session.get_outputs()]
        self.output = "probabilities" if "probabilities" in outputs else outputs[0]
        self.ready = True
        return self.ready

    def predict(self, payload: InferRequest, headers=None, response_headers=None) -> InferResponse:
        request = payload.inputs[0]
        x = request.as_numpy().astype(np.float32, copy=False)
        y = self.session.run([self.output], {self.input: x})[0]
        out = InferOutput(name=self.output, shape=list(y.shape), datatype="FP32")
        # JSON out unless the client asked for binary outputs, as Triton and ml do.
        binary = bool((payload.parameters or {}).get("binary_data_output", False))
        out.set_data_from_numpy(y, binary_data=binary)
        return InferResponse(model_name=self.name, infer_outputs=[out], response_id=payload.id or generate_uuid())


def loopback_rest_server(sock):
    """kserve's RESTServer, serving on `sock` (bound to 127.0.0.1) instead of 0.0.0.0:<http_port>."""

    class LoopbackRESTServer(RESTServer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.config.host = "127.0.0.1"
            self.config.port = sock.getsockname()[1]

        async def start(self):
            self.create_application()
            await self._server.serve(sockets=[sock])

    return LoopbackRESTServer


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("model", help="model.onnx")
    parser.add_argument("--name", default="mnist")
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads")
    args, _ = parser.parse_known_args()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    sock.set_inheritable(True)
    kserve.model_server.RESTServer = loopback_rest_server(sock)
    model = OnnxClassifier(args.name, args.model, args.threads)
    server = kserve.ModelServer(workers=1, enable_grpc=False, enable_latency_logging=False)
    # Events at start and stop only: uvicorn's access log writes a line per request.
    logging.getLogger("uvicorn.access").disabled = True
    logging.getLogger("kserve.trace").disabled = True
    sys.stdout.write(json.dumps({"port": sock.getsockname()[1], "onnxruntime": ort.__version__, "kserve": importlib.metadata.version("kserve")}) + "\n")
    sys.stdout.flush()
    server.start([model])


if __name__ == "__main__":
    main()
